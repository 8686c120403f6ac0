package endwell_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/endwell/endwell"
)

// Use a Transport as an http.Client's transport, like net/http's.
func Example() {
	t := &endwell.Transport{}
	defer t.Shutdown(context.Background())
	client := &http.Client{Transport: t, Timeout: 10 * time.Second}
	resp, err := client.Get("https://example.com/")
	if err != nil {
		log.Print(err)
		return
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
}

// On SIGTERM or SIGINT, shut the pool down within a deadline: idle connections say goodbye
// at once, all in parallel; requests in flight finish, then their connections say goodbye;
// whatever is left at the deadline is aborted. Every peer sees a clean end, and the process
// exits within the deadline whatever the peers do.
func ExampleTransport_Shutdown() {
	t := &endwell.Transport{}
	client := &http.Client{Transport: t}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go work(ctx, client) // the program's work, until ctx ends

	<-ctx.Done()
	stop() // a second signal kills the process at once
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := t.Shutdown(sctx); err != nil {
		fmt.Fprintln(os.Stderr, "shutdown cut short:", err)
	}
}

func work(ctx context.Context, client *http.Client) {
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://example.com/", nil)
		if resp, err := client.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		time.Sleep(time.Second)
	}
}
