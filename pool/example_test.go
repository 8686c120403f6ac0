package pool_test

import (
	"context"
	"fmt"
	"time"

	"github.com/endwell/endwell/pool"
)

// origin is a key: what makes connections interchangeable, and all a dial needs to know.
type origin struct {
	scheme, addr string
}

func (o origin) String() string { return o.scheme + "://" + o.addr }

func Example() {
	dials := 0
	p := pool.New(pool.Config[origin, string]{
		MaxPerKey:   4,
		IdleTimeout: 90 * time.Second,
		Dial: func(ctx context.Context, key origin) (string, int, error) {
			dials++
			return fmt.Sprintf("conn %d to %s", dials, key), 1, nil // HTTP/1.1: one use at a time
		},
		Retire: func(c string, why pool.Reason) {
			fmt.Printf("retire %s: %v\n", c, why)
		},
	})
	defer p.Close()

	ctx := context.Background()
	c, info, err := p.Get(ctx, origin{"https", "example.com:443"})
	if err != nil {
		panic(err)
	}
	fmt.Println(c.Value, "reused:", info.Reused)
	p.Put(c) // the response was read to EOF: keep the connection

	c, info, _ = p.Get(ctx, origin{"https", "example.com:443"})
	fmt.Println(c.Value, "reused:", info.Reused, "was idle:", info.WasIdle)
	p.Put(c)
	p.CloseIdle()
	// Output:
	// conn 1 to https://example.com:443 reused: false
	// conn 1 to https://example.com:443 reused: true was idle: true
	// retire conn 1 to https://example.com:443: close_idle
}
