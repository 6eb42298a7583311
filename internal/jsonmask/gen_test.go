package jsonmask

import (
	"strconv"
	"strings"
	"sync"
)

// Test documents generated in code (nothing to ship).

var firstNames = []string{"Ann", "Bob", "Chen", "Dana", "Émile", "Farah", "Gus", "Hana", "Ivo", "Jo"}
var lastNames = []string{"Lee", "Okafor", "Müller", "Nakamura", "Silva", "O'Brien", "Kowalski", "Ng"}
var depts = []string{"ops", "eng", "sales", "hr", "legal", "support"}
var skus = []string{"mug", "hoodie", "sticker-pack", "gift-card-25", "plant", "coffee"}

// denseDoc builds an API-like document of about size bytes: employees and
// gifts with nested recipients and senders, short strings, escapes,
// surrogate pairs, numbers, booleans and nulls.
func denseDoc(size int) []byte {
	var b strings.Builder
	b.Grow(size + 4096)
	b.WriteString(`{"company":{"id":"c_1","name":"Acme \"Gifts\" Inc","support_email":"help@acme.test"},"employees":[`)
	i := 0
	for b.Len() < size/2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fn, ln := firstNames[i%len(firstNames)], lastNames[i%len(lastNames)]
		id := strconv.Itoa(i)
		b.WriteString(`{"id":"e` + id + `","firstName":"` + fn + `","last_name":"` + ln +
			`","email":"` + strings.ToLower(fn[:1]) + `.` + id + `@acme.test","workPhone":"+1 (555) 010-` + strconv.Itoa(1000+i%9000) +
			`","mobile":1555010` + strconv.Itoa(1000+i%9000) + `,"dept":"` + depts[i%len(depts)] + `","title":"Engineer","level":` + strconv.Itoa(i%7) +
			`,"active":` + strconv.FormatBool(i%3 != 0) + `,"manager":{"id":"e` + strconv.Itoa(i/10) + `","displayName":"Boss ` + id + `"},"tags":["t` + strconv.Itoa(i%5) + `","remote"],"bio":null,"note":"likes \u2615 and \ud83c\udf81 <3 &"}`)
		i++
	}
	b.WriteString(`],"gifts":[`)
	j := 0
	for b.Len() < size {
		if j > 0 {
			b.WriteByte(',')
		}
		id := strconv.Itoa(j)
		b.WriteString(`{"id":"g` + id + `","sku":"` + skus[j%len(skus)] + `","amount":` + strconv.Itoa(5+j%95) + `.5,"currency":"USD","status":"sent","recipient":{"id":"e` +
			strconv.Itoa(j%1000) + `","name":"` + firstNames[j%len(firstNames)] + ` ` + lastNames[j%len(lastNames)] + `","email":"r` + id + `@acme.test","emails":["a` + id + `@x.test","b@y.test"]},"sender":{"id":"e` +
			strconv.Itoa(j%77) + `","name":"Sam"},"message":"Happy birthday!","sent_at":"2026-01-15T10:00:00Z","cc":[]}`)
		j++
	}
	b.WriteString(`],"total":` + strconv.Itoa(i+j) + `}`)
	return []byte(b.String())
}

const lorem = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum. Curabitur pretium tincidunt lacus nulla gravida orci a odio nullam varius."

// longDoc builds a document of about size bytes whose strings are mostly
// about 540 bytes long (articles with descriptions and bodies).
func longDoc(size int) []byte {
	var b strings.Builder
	b.Grow(size + 4096)
	b.WriteString(`{"articles":[`)
	for i := 0; b.Len() < size; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		id := strconv.Itoa(i)
		b.WriteString(`{"id":` + id + `,"title":"Article ` + id + ` about gifts","author":{"name":"Ann Lee","email":"ann@acme.test"},"description":"` +
			lorem + `","body":"` + lorem[id2(i):] + ` ` + lorem[:id2(i)] + `","summary":"` + lorem + `"}`)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

func id2(i int) int { return i % 97 }

var (
	benchOnce             sync.Once
	benchDense, benchLong []byte
)

func benchDocs() ([]byte, []byte) {
	benchOnce.Do(func() {
		benchDense = denseDoc(10 << 20)
		benchLong = longDoc(10 << 20)
	})
	return benchDense, benchLong
}
