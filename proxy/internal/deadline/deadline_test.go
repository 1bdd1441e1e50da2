package deadline

import (
	"testing"
	"time"
)

// TestNext: the deadline in force is never earlier than asked nor more
// than the slack later; a new one is set once per slack of advance.
func TestNext(t *testing.T) {
	var c Coarse
	const slack = 100 * time.Millisecond
	start := time.Now()
	var inForce time.Time
	sets := 0
	for i := range 50 {
		want := start.Add(time.Minute + time.Duration(i)*7*time.Millisecond)
		if d, ok := c.Next(want, slack); ok {
			inForce = d
			sets++
		}
		if inForce.Before(want) || inForce.Sub(want) > slack {
			t.Fatalf("request %d: the deadline in force is %v after its own, want within [0, %v]", i, inForce.Sub(want), slack)
		}
	}
	// 50 deadlines 7ms apart span 343ms: one set per 100ms of it.
	if sets != 4 {
		t.Errorf("%d deadlines set for 50, want 4", sets)
	}
	// An earlier deadline than the one in force is set.
	early := start.Add(time.Second)
	if d, ok := c.Next(early, slack); !ok || !d.Equal(early.Add(slack)) {
		t.Errorf("an earlier deadline: %v, %v", d, ok)
	}
	// No deadline, no slack, and a forgotten one are set as asked.
	if d, ok := c.Next(time.Time{}, slack); !ok || !d.IsZero() {
		t.Errorf("no deadline: %v, %v", d, ok)
	}
	if d, ok := c.Next(early, 0); !ok || !d.Equal(early) {
		t.Errorf("no slack: %v, %v", d, ok)
	}
	c.Next(early, slack)
	c.Forget()
	if _, ok := c.Next(early, slack); !ok {
		t.Error("after Forget, the deadline was not set")
	}
}

func TestSlackFor(t *testing.T) {
	for _, tc := range []struct{ timeout, want time.Duration }{
		{100 * time.Millisecond, 1562500 * time.Nanosecond},
		{6400 * time.Millisecond, 100 * time.Millisecond},
		{time.Minute, MaxSlack},
		{0, 0},
	} {
		if got := SlackFor(tc.timeout); got != tc.want {
			t.Errorf("SlackFor(%v) = %v, want %v", tc.timeout, got, tc.want)
		}
	}
}

type countingConn struct {
	n    int
	last time.Time
}

func (c *countingConn) SetReadDeadline(t time.Time) error {
	c.n++
	c.last = t
	return nil
}

// TestReadSet: fasthttp's two read deadlines per request (idle wait,
// header), 1ms apart request after request, reach the connection once per
// slack.
func TestReadSet(t *testing.T) {
	var c countingConn
	r := Read{Slack: SlackFor(time.Minute)}
	start := time.Now()
	for i := range 500 {
		at := start.Add(time.Duration(i) * time.Millisecond)
		for _, d := range []time.Time{at.Add(time.Minute), at.Add(time.Minute + 100*time.Microsecond)} {
			if err := r.Set(&c, d); err != nil {
				t.Fatal(err)
			}
			if c.last.Before(d) || c.last.Sub(d) > r.Slack {
				t.Fatalf("deadline in force %v after the one asked", c.last.Sub(d))
			}
		}
	}
	if c.n != 2 {
		t.Errorf("%d deadlines set for 1000, want 2 (500ms of requests, a slack of %v)", c.n, r.Slack)
	}
}
