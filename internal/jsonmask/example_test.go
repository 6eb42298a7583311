package jsonmask_test

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/scopegate/scopegate/internal/jsonmask"
)

func Example() {
	cfg, err := jsonmask.Compile(jsonmask.Options{
		Fields: []string{"ssn"},
		Keep:   []string{"$.company.name"},
		Detect: []string{"email"},
	})
	if err != nil {
		panic(err)
	}
	s := cfg.NewStream(os.Stdout)
	// The document may arrive split anywhere.
	s.Write([]byte(`{"company":{"name":"Acme"},"employees":[{"name":"Ann Lee","em\u0061il":"ann@ac`))
	s.Write([]byte(`me.test","SSN":123456789,"note":"cc bob@acme.test"}]}`))
	if err := s.Close(); err != nil {
		panic(err)
	}
	fmt.Println()
	fmt.Println(s.Stats().Fields, "fields masked")
	// Output:
	// {"company":{"name":"Acme"},"employees":[{"name":"[REDACTED]","em\u0061il":"[REDACTED]","SSN":"[REDACTED]","note":"cc [REDACTED]"}]}
	// 4 fields masked
}

func ExampleConfig_Copy() {
	cfg := jsonmask.MustCompile(jsonmask.Options{Strategy: "partial"})
	in := "{\"email\":\"ann@acme.test\"}\n{\"phone\":\"+1 (555) 010-1234\"}\n"
	st, err := cfg.Copy(os.Stdout, stringsReader(in), jsonmask.ModeNDJSON)
	fmt.Println(st.Records, err)
	// Output:
	// {"email":"a***@acme.test"}
	// {"phone":"+* (***) ***-1234"}
	// 2 <nil>
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }
