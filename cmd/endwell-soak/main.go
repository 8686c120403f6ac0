// Command endwell-soak churns an endwell Transport against an embedded witness server for
// minutes: requests, idle evictions, servers closing idle connections, aborted bodies,
// cancelled requests, CloseIdleConnections, and a Shutdown of the whole transport every few
// seconds. Every few seconds it prints the process's open file descriptors and goroutines,
// which must stay flat: it exits with status 1 if, at the end, either grew beyond a
// tolerance over its starting value.
//
//	endwell-soak -d 10m -every 5s
//
// It is not run in CI (a test runs it for two seconds).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/witness"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "endwell-soak:", err)
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	dur, every, generation time.Duration
	workers                int
	fdTol, goTol           int
}

func parse(args []string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("endwell-soak", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.DurationVar(&c.dur, "d", 2*time.Minute, "how long to churn")
	fs.DurationVar(&c.every, "every", 5*time.Second, "how often to print the counts")
	fs.DurationVar(&c.generation, "shutdown-every", 3*time.Second, "how often to Shutdown the transport and start a new one")
	fs.IntVar(&c.workers, "workers", 16, "concurrent clients")
	fs.IntVar(&c.fdTol, "fd-tolerance", 16, "how many more file descriptors than at the start count as a leak")
	fs.IntVar(&c.goTol, "goroutine-tolerance", 32, "how many more goroutines than at the start count as a leak")
	err := fs.Parse(args)
	return c, err
}

// counts is one sample of what must stay flat.
type counts struct{ fds, goroutines int }

func sample() counts {
	n := -1
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		n = len(ents)
	}
	return counts{n, runtime.NumGoroutine()}
}

// settle waits up to 3 s for the counts to come down to at most base + tolerance, and
// returns the last sample.
func settle(base counts, c config) counts {
	deadline := time.Now().Add(3 * time.Second)
	for {
		s := sample()
		if (s.fds <= base.fds+c.fdTol && s.goroutines <= base.goroutines+c.goTol) || time.Now().After(deadline) {
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// handler serves the churn: /ok, /large (a body the client abandons), /slow (a response the
// client cancels), /close (Connection: close).
func handler(c *witness.Conn, r *http.Request) witness.Action {
	switch r.URL.Path {
	case "/large":
		h := http.Header{"Content-Length": {strconv.Itoa(4 << 20)}}
		if c.WriteHead(http.StatusOK, h) != nil {
			return witness.CloseFIN
		}
		chunk := make([]byte, 32<<10)
		for range (4 << 20) / len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return witness.CloseFIN
			}
		}
		return witness.KeepAlive
	case "/slow":
		select {
		case <-time.After(time.Second):
		case <-c.ClientDone():
			return witness.CloseFIN
		case <-c.Context().Done():
			return witness.CloseFIN
		}
	case "/close":
		c.Respond(http.StatusOK, http.Header{"Connection": {"close"}}, "bye\n")
		return witness.Auto
	}
	c.Respond(http.StatusOK, nil, "ok\n")
	return witness.KeepAlive
}

func run(ctx context.Context, args []string, out io.Writer) error {
	c, err := parse(args, out)
	if err != nil {
		return err
	}
	s := witness.New(witness.Options{
		TLS:          true,
		Handler:      handler,
		IdleClose:    witness.IdleClose{After: 700 * time.Millisecond, Action: witness.CloseGraceful},
		DrainTimeout: time.Second,
	})
	if err := s.Start(); err != nil {
		return err
	}
	defer s.Close()
	base := sample()
	fmt.Fprintf(out, "start: %d fds, %d goroutines; churning for %v with %d workers against %s\n", base.fds, base.goroutines, c.dur, c.workers, s.URL())

	ctx, cancel := context.WithTimeout(ctx, c.dur)
	defer cancel()
	var requests, failures, generations atomic.Int64
	var peak counts
	var peakMu sync.Mutex
	newTransport := func() *endwell.Transport {
		return &endwell.Transport{
			TLSClientConfig:     s.ClientTLSConfig(),
			IdleConnTimeout:     time.Duration(200+rand.IntN(800)) * time.Millisecond,
			MaxIdleConnsPerHost: 4,
			ShutdownTimeout:     500 * time.Millisecond,
			MaxDrainBytes:       -1,
		}
	}
	var cur atomic.Pointer[endwell.Transport]
	cur.Store(newTransport())

	var wg sync.WaitGroup
	for range c.workers {
		wg.Add(1)
		// One client: requests of every kind until the churn ends.
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				requests.Add(1)
				if err := churnOnce(ctx, cur.Load(), s.URL()); err != nil {
					failures.Add(1)
				}
			}
		}()
	}
	wg.Add(1)
	// The reaper: CloseIdleConnections now and then, a Shutdown per generation, and the
	// samples.
	go func() {
		defer wg.Done()
		gen := time.NewTicker(c.generation)
		defer gen.Stop()
		tick := time.NewTicker(c.every)
		defer tick.Stop()
		idle := time.NewTicker(250 * time.Millisecond)
		defer idle.Stop()
		start := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-idle.C:
				cur.Load().CloseIdleConnections()
			case <-gen.C:
				old := cur.Swap(newTransport())
				sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
				old.Shutdown(sctx)
				scancel()
				generations.Add(1)
			case <-tick.C:
				sm := sample()
				peakMu.Lock()
				peak.fds, peak.goroutines = max(peak.fds, sm.fds), max(peak.goroutines, sm.goroutines)
				peakMu.Unlock()
				fmt.Fprintf(out, "%6.1fs: %d fds, %d goroutines; %d requests (%d failed), %d shutdowns\n",
					time.Since(start).Seconds(), sm.fds, sm.goroutines, requests.Load(), failures.Load(), generations.Load())
			}
		}
	}()
	wg.Wait()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := cur.Load().Shutdown(sctx); err != nil {
		return fmt.Errorf("final Shutdown: %w", err)
	}
	end := settle(base, c)
	fmt.Fprintf(out, "end: %d fds, %d goroutines (start %d, %d; peak %d, %d); %d requests, %d failed, %d shutdowns\n",
		end.fds, end.goroutines, base.fds, base.goroutines, peak.fds, peak.goroutines, requests.Load(), failures.Load(), generations.Load())
	if requests.Load() == 0 {
		return errors.New("no request was made")
	}
	if end.fds > base.fds+c.fdTol || end.goroutines > base.goroutines+c.goTol {
		return fmt.Errorf("leak: %d fds and %d goroutines at the end, %d and %d at the start (tolerance %d, %d)",
			end.fds, end.goroutines, base.fds, base.goroutines, c.fdTol, c.goTol)
	}
	return nil
}

// churnOnce makes one request of a random kind with tr. Errors are expected (a transport
// shut down under the request, an abort): they are counted, not fatal.
func churnOnce(ctx context.Context, tr *endwell.Transport, base string) error {
	path := "/ok"
	switch n := rand.IntN(20); {
	case n < 2:
		path = "/large"
	case n < 4:
		path = "/slow"
	case n < 6:
		path = "/close"
	}
	rctx := ctx
	if path == "/slow" {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(ctx, time.Duration(10+rand.IntN(90))*time.Millisecond)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, base+path, nil)
	if err != nil {
		return err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if path == "/large" {
		// Abandon the body early: an abort.
		_, err = io.ReadFull(resp.Body, make([]byte, 1000))
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}
