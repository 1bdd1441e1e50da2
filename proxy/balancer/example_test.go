package balancer

import (
	"fmt"

	"github.com/wasmgate/wasmgate/config"
)

func ExampleNew() {
	hosts := []Host{
		&exampleHost{addr: "10.0.0.1:8080", weight: 1},
		&exampleHost{addr: "10.0.0.2:8080", weight: 1},
		&exampleHost{addr: "10.0.0.3:8080", weight: 1},
	}
	b, err := New(config.LBMaglev, hosts, Options{})
	if err != nil {
		panic(err)
	}
	// Each request hashes its session cookie, so the same session reaches
	// the same host on every request.
	for range 3 {
		i := b.Pick(HashKey([]byte("session=4f1c2a")))
		fmt.Println(hosts[i].Key())
	}
	// Output:
	// 10.0.0.2:8080
	// 10.0.0.2:8080
	// 10.0.0.2:8080
}

type exampleHost struct {
	addr   string
	weight int
}

func (h *exampleHost) Weight() int           { return h.weight }
func (h *exampleHost) ActiveRequests() int64 { return 0 }
func (h *exampleHost) Key() string           { return h.addr }
