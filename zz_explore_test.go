package endwell_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"
)

func TestZZExplore(t *testing.T) {
	n := startNginxWith(t, nginxOptions{KeepAlive: "500ms", HTTP2: true, Debug: true})
	tr, la := newNginxTransport(t, &tls.Config{RootCAs: n.cert.pool}, nil)
	req, _ := http.NewRequest("GET", n.url("/ok"), nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("proto %s", resp.Proto)
	req, _ = http.NewRequest("GET", n.url("/large"), nil)
	resp, _ = tr.RoundTrip(req)
	io.ReadFull(resp.Body, make([]byte, 64<<10))
	resp.Body.Close()
	interopGet(t, tr, n.url("/ok"))
	if t.Name() == "x" {
		time.Sleep(2 * time.Second)
	} else {
		ctx, c := context.WithTimeout(context.Background(), 3*time.Second)
		defer c()
		tr.Shutdown(ctx)
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("conns %v stats %+v", la.list(), tr.Stats())
	t.Logf("access:\n%s", n.accessLog())
	t.Logf("error:\n%s", n.errorLog())
}
