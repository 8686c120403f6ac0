package endwell_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/witness"
)

// TestShutdownOnSIGTERM runs the pattern of ExampleTransport_Shutdown in a child process:
// it keeps connections to a witness server busy and idle, receives SIGTERM, shuts down and
// exits. Every connection must have ended with close_notify then FIN.
func TestShutdownOnSIGTERM(t *testing.T) {
	if os.Getenv("ENDWELL_SIGTERM_CHILD") != "" {
		sigtermChild()
		return
	}
	srv := newTLSWitness(witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
		if r.URL.Path == "/slow" {
			time.Sleep(300 * time.Millisecond) // in flight when the signal arrives
		}
		c.Respond(200, nil, "ok")
		return witness.KeepAlive
	}})
	defer srv.Close()

	p := startTestChild(t, "TestShutdownOnSIGTERM", "ENDWELL_SIGTERM_CHILD="+srv.URL())
	// The child prints a line once its connections are set up.
	if out, _ := p.WaitOutput(regexp.MustCompile(`\n`), 10*time.Second); out != "ready\n" {
		t.Fatalf("child said %q", out)
	}
	start := time.Now()
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Exited():
		if err := p.Err(); err != nil {
			t.Fatalf("child: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("child did not exit within 10 s of SIGTERM") // the cleanup kills it
	}
	t.Logf("child exited %v after SIGTERM", time.Since(start))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reps, err := srv.WaitConns(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if got := r.ClientEnding(); got != "close_notify+FIN" {
			t.Errorf("connection %d: got %q, want close_notify+FIN", r.ID, got)
		}
	}
}

// sigtermChild is the child process of TestShutdownOnSIGTERM.
func sigtermChild() {
	url := os.Getenv("ENDWELL_SIGTERM_CHILD")
	// The witness's certificate is made in the parent process: the child does not verify
	// it (loopback, test only).
	// HTTP/1.1 only: with HTTP/2 on, concurrent first requests to an https host wait for
	// the first dial before dialling their own, which this test's timing does not allow for.
	h1 := new(http.Protocols)
	h1.SetHTTP1(true)
	t := &endwell.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, MaxIdleConnsPerHost: 8, Protocols: h1}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()

	// Three idle connections and one in flight.
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			path := "/"
			if i == 3 {
				path = "/slow"
			}
			resp, err := t.RoundTrip(mustRequest(url + path))
			if err != nil {
				os.Exit(3)
			}
			if path == "/slow" {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return
			}
			// Hold the three fast ones until all are open, so that they use three
			// connections.
			time.Sleep(100 * time.Millisecond)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	time.Sleep(150 * time.Millisecond)
	os.Stdout.WriteString("ready\n")
	<-ctx.Done()
	stop()
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := t.Shutdown(sctx); err != nil {
		os.Exit(4)
	}
	wg.Wait()
	os.Exit(0)
}

func mustRequest(url string) *http.Request {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		panic(err)
	}
	return req
}
