package pool_test

import (
	"context"
	"fmt"
	"time"

	"github.com/endwell/endwell/pool"
)

func Example() {
	dials := 0
	p := pool.New(pool.Config[string]{
		MaxPerKey:   4,
		IdleTimeout: 90 * time.Second,
		Dial: func(ctx context.Context, key string) (string, int, error) {
			dials++
			return fmt.Sprintf("conn %d to %s", dials, key), 1, nil // HTTP/1.1: one use at a time
		},
		Retire: func(c string, why pool.Reason) {
			fmt.Printf("retire %s: %v\n", c, why)
		},
	})
	defer p.Close()

	ctx := context.Background()
	c, info, err := p.Get(ctx, "https://example.com:443")
	if err != nil {
		panic(err)
	}
	fmt.Println(c.Value, "reused:", info.Reused)
	p.Put(c) // the response was read to EOF: keep the connection

	c, info, _ = p.Get(ctx, "https://example.com:443")
	fmt.Println(c.Value, "reused:", info.Reused, "was idle:", info.WasIdle)
	p.Put(c)
	p.CloseIdle()
	// Output:
	// conn 1 to https://example.com:443 reused: false
	// conn 1 to https://example.com:443 reused: true was idle: true
	// retire conn 1 to https://example.com:443: close_idle
}
