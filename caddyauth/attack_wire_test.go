package caddyauth_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/quic-go/qpack"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/scopegate/scopegate/internal/testpki"
)

// The attack catalogue sends every request exactly as written, over
// HTTP/1.1, HTTP/2 and HTTP/3, without a client library in between that
// would clean the path, validate the method or drop headers it considers
// illegal: HTTP/1.1 is written byte by byte on a TLS connection, HTTP/2 as
// frames with golang.org/x/net/http2's Framer and HPACK, HTTP/3 as frames
// with QPACK on a quic-go stream. Whatever the server's stack then refuses
// is part of the result.

// protocols are the wire protocols of the catalogue.
var protocols = []string{"h1", "h2", "h3"}

// wireReq is one request as it goes on the wire.
type wireReq struct {
	method string
	// target is the HTTP/1.1 request target and the HTTP/2 and HTTP/3
	// :path (absent when empty, for CONNECT).
	target string
	// headers in order; a name may repeat. Names are lower-cased on
	// HTTP/2 and HTTP/3, as those protocols require.
	headers [][2]string
	body    string
	cert    *testpki.Leaf
	port    int    // 0: the fixture's main site
	host    string // Host / :authority; "" = localhost:port
	sni     string // TLS server name; "" = localhost, "-" = none
	// sessions, when set, lets the TLS client resume sessions.
	sessions tls.ClientSessionCache
}

// wireResp is what came back. err is set when the stack refused the
// request without an HTTP answer: a failed handshake, a reset stream, a
// closed connection.
type wireResp struct {
	status   int
	header   http.Header
	body     string
	err      error
	resumed  bool // the TLS session was resumed
	used0RTT bool // HTTP/3: the request went out as 0-RTT early data and the server took it
}

func (r wireReq) portOr() int {
	if r.port == 0 {
		return mainPort
	}
	return r.port
}

func (r wireReq) authority() string {
	if r.host != "" {
		return r.host
	}
	return fmt.Sprintf("localhost:%d", r.portOr())
}

func (f *fixture) wireTLS(r wireReq, alpn string) *tls.Config {
	cfg := f.clientTLS(r.cert)
	if r.sni != "" {
		// Another server name than the certificate's (or none, "-"): the
		// server certificate is still verified, by hand, for "localhost".
		cfg.ServerName = strings.TrimPrefix(r.sni, "-")
		cfg.InsecureSkipVerify = true
		roots := cfg.RootCAs
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyServer(raw, roots)
		}
	}
	cfg.NextProtos = []string{alpn}
	cfg.ClientSessionCache = r.sessions
	return cfg
}

// send sends r over proto ("h1", "h2", "h3").
func (f *fixture) send(r wireReq, proto string) wireResp {
	switch proto {
	case "h1":
		return f.sendH1(r)
	case "h2":
		return f.sendH2(r)
	case "h3":
		return f.sendH3(r, false)
	}
	panic("unknown protocol " + proto)
}

const wireTimeout = 10 * time.Second

func (f *fixture) sendH1(r wireReq) wireResp {
	d := &net.Dialer{Timeout: wireTimeout}
	conn, err := tls.DialWithDialer(d, "tcp", fmt.Sprintf("%s:%d", upstreamHost, r.portOr()), f.wireTLS(r, "http/1.1"))
	if err != nil {
		return wireResp{err: fmt.Errorf("handshake: %w", err)}
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(wireTimeout))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", r.method, r.target, r.authority())
	hasConnection := false
	for _, h := range r.headers {
		hasConnection = hasConnection || strings.EqualFold(h[0], "Connection")
		b.WriteString(h[0] + ": " + h[1] + "\r\n")
	}
	if r.body != "" {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(r.body))
	}
	if !hasConnection {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n" + r.body)
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return wireResp{err: err}
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: r.method})
	if err != nil {
		return wireResp{err: fmt.Errorf("reading the response: %w", err)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return wireResp{status: resp.StatusCode, header: resp.Header, body: string(body), resumed: conn.ConnectionState().DidResume}
}

func (f *fixture) sendH2(r wireReq) wireResp {
	d := &net.Dialer{Timeout: wireTimeout}
	conn, err := tls.DialWithDialer(d, "tcp", fmt.Sprintf("%s:%d", upstreamHost, r.portOr()), f.wireTLS(r, "h2"))
	if err != nil {
		return wireResp{err: fmt.Errorf("handshake: %w", err)}
	}
	defer conn.Close()
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		return wireResp{err: fmt.Errorf("ALPN negotiated %q, not h2", p)}
	}
	_ = conn.SetDeadline(time.Now().Add(wireTimeout))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		return wireResp{err: err}
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 1 << 20
	if err := fr.WriteSettings(); err != nil {
		return wireResp{err: err}
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, hf := range pseudoHeaders(r) {
		_ = enc.WriteField(hpack.HeaderField{Name: hf[0], Value: hf[1]})
	}
	for _, h := range r.headers {
		_ = enc.WriteField(hpack.HeaderField{Name: strings.ToLower(h[0]), Value: h[1]})
	}
	if r.body != "" {
		_ = enc.WriteField(hpack.HeaderField{Name: "content-length", Value: fmt.Sprint(len(r.body))})
	}
	// Split the block into frames of the default maximum size (16 KiB),
	// for the over-long paths.
	const maxFrame = 16384
	frag := block.Bytes()
	first := frag[:min(len(frag), maxFrame)]
	frag = frag[len(first):]
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: r.body == "", EndHeaders: len(frag) == 0}); err != nil {
		return wireResp{err: err}
	}
	for len(frag) > 0 {
		n := min(len(frag), maxFrame)
		if err := fr.WriteContinuation(1, n == len(frag), frag[:n]); err != nil {
			return wireResp{err: err}
		}
		frag = frag[n:]
	}
	if r.body != "" {
		if err := fr.WriteData(1, true, []byte(r.body)); err != nil {
			return wireResp{err: err}
		}
	}
	resp := wireResp{header: http.Header{}, resumed: conn.ConnectionState().DidResume}
	var body bytes.Buffer
	for {
		frame, err := fr.ReadFrame()
		if err != nil {
			return wireResp{err: fmt.Errorf("reading frames: %w", err)}
		}
		switch fm := frame.(type) {
		case *http2.SettingsFrame:
			if !fm.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !fm.IsAck() {
				_ = fr.WritePing(true, fm.Data)
			}
		case *http2.MetaHeadersFrame:
			if fm.StreamID != 1 {
				continue
			}
			for _, hf := range fm.Fields {
				if hf.Name == ":status" {
					fmt.Sscan(hf.Value, &resp.status)
				} else if !hf.IsPseudo() {
					resp.header.Add(hf.Name, hf.Value)
				}
			}
			if fm.StreamEnded() {
				resp.body = body.String()
				return resp
			}
		case *http2.DataFrame:
			if fm.StreamID != 1 {
				continue
			}
			body.Write(fm.Data())
			if n := len(fm.Data()); n > 0 {
				_ = fr.WriteWindowUpdate(0, uint32(n))
				_ = fr.WriteWindowUpdate(1, uint32(n))
			}
			if fm.StreamEnded() {
				resp.body = body.String()
				return resp
			}
		case *http2.RSTStreamFrame:
			if fm.StreamID == 1 {
				return wireResp{err: fmt.Errorf("stream reset: %v", fm.ErrCode)}
			}
		case *http2.GoAwayFrame:
			if fm.LastStreamID < 1 || fm.ErrCode != http2.ErrCodeNo {
				return wireResp{err: fmt.Errorf("GOAWAY: %v %q", fm.ErrCode, fm.DebugData())}
			}
		}
	}
}

// pseudoHeaders are the HTTP/2 and HTTP/3 pseudo-header fields of r.
func pseudoHeaders(r wireReq) [][2]string {
	h := [][2]string{{":method", r.method}}
	// CONNECT to an authority (RFC 9113 8.5, RFC 9114 4.4) has neither
	// :scheme nor :path.
	if r.target != "" && (r.method != "CONNECT" || strings.HasPrefix(r.target, "/")) {
		h = append(h, [2]string{":scheme", "https"}, [2]string{":path", r.target})
	}
	return append(h, [2]string{":authority", r.authority()})
}

// HTTP/3 frame and stream types (RFC 9114 section 7.2, 6.2).
const (
	h3FrameData     = 0x0
	h3FrameHeaders  = 0x1
	h3FrameSettings = 0x4
	h3StreamControl = 0x0
)

// sendH3 sends r over a new QUIC connection. With early set, r is sent as
// 0-RTT data before the handshake completes (r.sessions must hold a ticket
// from an earlier connection to the same server).
func (f *fixture) sendH3(r wireReq, early bool) wireResp {
	ctx, cancel := context.WithTimeout(context.Background(), wireTimeout)
	defer cancel()
	addr := fmt.Sprintf("%s:%d", upstreamHost, r.portOr())
	cfg := &quic.Config{HandshakeIdleTimeout: wireTimeout}
	var conn *quic.Conn
	var err error
	if early {
		conn, err = quic.DialAddrEarly(ctx, addr, f.wireTLS(r, "h3"), cfg)
	} else {
		conn, err = quic.DialAddr(ctx, addr, f.wireTLS(r, "h3"), cfg)
	}
	if err != nil {
		return wireResp{err: fmt.Errorf("handshake: %w", err)}
	}
	defer conn.CloseWithError(0, "")
	// The control stream with an empty SETTINGS frame, as every HTTP/3
	// client sends.
	ctl, err := conn.OpenUniStream()
	if err != nil {
		return wireResp{err: err}
	}
	if _, err := ctl.Write(quicvarint.Append(quicvarint.Append(quicvarint.Append(nil, h3StreamControl), h3FrameSettings), 0)); err != nil {
		return wireResp{err: err}
	}
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return wireResp{err: err}
	}
	_ = str.SetDeadline(time.Now().Add(wireTimeout))
	var block bytes.Buffer
	enc := qpack.NewEncoder(&block)
	for _, hf := range pseudoHeaders(r) {
		_ = enc.WriteField(qpack.HeaderField{Name: hf[0], Value: hf[1]})
	}
	for _, h := range r.headers {
		_ = enc.WriteField(qpack.HeaderField{Name: strings.ToLower(h[0]), Value: h[1]})
	}
	if r.body != "" {
		_ = enc.WriteField(qpack.HeaderField{Name: "content-length", Value: fmt.Sprint(len(r.body))})
	}
	_ = enc.Close()
	msg := quicvarint.Append(quicvarint.Append(nil, h3FrameHeaders), uint64(block.Len()))
	msg = append(msg, block.Bytes()...)
	if r.body != "" {
		msg = quicvarint.Append(quicvarint.Append(msg, h3FrameData), uint64(len(r.body)))
		msg = append(msg, r.body...)
	}
	if _, err := str.Write(msg); err != nil {
		return wireResp{err: err}
	}
	_ = str.Close()
	resp := wireResp{header: http.Header{}}
	var body bytes.Buffer
	rd := bufio.NewReader(str)
	for {
		typ, err := quicvarint.Read(rd)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return wireResp{err: fmt.Errorf("reading frames: %w", err)}
		}
		n, err := quicvarint.Read(rd)
		if err != nil {
			return wireResp{err: fmt.Errorf("reading frames: %w", err)}
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(rd, payload); err != nil {
			return wireResp{err: fmt.Errorf("reading frames: %w", err)}
		}
		switch typ {
		case h3FrameHeaders:
			next := qpack.NewDecoder().Decode(payload)
			for {
				hf, err := next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return wireResp{err: fmt.Errorf("QPACK: %w", err)}
				}
				if hf.Name == ":status" {
					fmt.Sscan(hf.Value, &resp.status)
				} else if !hf.IsPseudo() {
					resp.header.Add(hf.Name, hf.Value)
				}
			}
		case h3FrameData:
			body.Write(payload)
		}
	}
	if resp.status == 0 {
		return wireResp{err: errors.New("stream ended without a response")}
	}
	resp.body = body.String()
	state := conn.ConnectionState()
	resp.resumed, resp.used0RTT = state.TLS.DidResume, state.Used0RTT
	return resp
}

// verifyServer verifies the server's chain for the name "localhost".
func verifyServer(raw [][]byte, roots *x509.CertPool) error {
	if len(raw) == 0 {
		return errors.New("no server certificate")
	}
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, der := range raw[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return err
		}
		inter.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: roots, Intermediates: inter})
	return err
}
