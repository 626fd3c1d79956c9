// A Go program (golang-go): the runtime's own threads (sysmon, the garbage
// collector's workers, the timer and network poller's epoll wait, signal-based
// preemption with SIGURG) under four goroutines that hash in parallel each
// round, meet on a WaitGroup and hand results over a channel; a mutex-guarded
// map, garbage every round, and a timer sleep between rounds. The main
// goroutine prints one line per round; the exit status is 7. Integer
// arithmetic, combined in a fixed order: the output does not depend on
// scheduling.
//
// usage: thr_go [ROUNDS]      build: go build -o thr_go thr_go.go
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"time"
)

func mix(x uint64) uint64 {
	x ^= x >> 31
	x *= 0x9e3779b97f4a7c15
	x ^= x >> 29
	return x
}

type part struct {
	worker int
	sum    uint64
}

func main() {
	rounds := 40
	if len(os.Args) > 1 {
		n, err := strconv.Atoi(os.Args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, "usage: thr_go [ROUNDS]")
			os.Exit(2)
		}
		rounds = n
	}
	fmt.Fprintf(os.Stderr, "mig-pid: %d\n", os.Getpid()) // for the migration tests
	const workers = 4
	var mu sync.Mutex
	seen := map[int]uint64{}
	var keep [][]byte
	for r := 0; r < rounds; r++ {
		var wg sync.WaitGroup
		parts := make(chan part, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				sum := uint64(0)
				junk := make([][]byte, 0, 64)
				for i := 0; i < 300000; i++ {
					sum += mix(uint64(r)*1000003 + uint64(w)*7919 + uint64(i))
					if i%5000 == 0 {
						junk = append(junk, make([]byte, 4096)) // garbage for the collector
					}
				}
				mu.Lock()
				seen[r*workers+w] = sum
				mu.Unlock()
				parts <- part{w, sum ^ uint64(len(junk))}
			}(w)
		}
		wg.Wait()
		close(parts)
		got := make([]part, 0, workers)
		for p := range parts {
			got = append(got, p)
		}
		sort.Slice(got, func(i, j int) bool { return got[i].worker < got[j].worker })
		total := uint64(0)
		for _, p := range got {
			total = mix(total ^ p.sum)
		}
		mu.Lock()
		entries := len(seen)
		mu.Unlock()
		keep = append(keep, make([]byte, 1<<16))
		if len(keep) > 8 {
			keep = keep[1:]
		}
		runtime.GC()
		fmt.Printf("round %d: %016x entries %d\n", r, total, entries)
		time.Sleep(20 * time.Millisecond)
	}
	os.Exit(7)
}
