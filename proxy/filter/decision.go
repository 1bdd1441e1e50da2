package filter

// Decision is a policy decision made on a request: by the mesh policy or
// by an authorization filter. Its strings are read during Decide and not
// retained.
type Decision struct {
	// Source is what decided: "mesh" (the mesh policy) or "authz" (an
	// authorization filter).
	Source string
	// Allowed is the verdict.
	Allowed bool
	// Policy and Rule name what decided, "" when nothing matched.
	Policy string
	Rule   string
	// Destination is the destination service; "" means the cluster the
	// request is routed to (the route's, when it has one only and none is
	// picked yet).
	Destination string
	// Reason says why, for a person.
	Reason string
}

// Decider records the policy decisions made on requests. The proxy gives
// each exchange one when decisions are recorded. Decide must not retain x
// or d.
type Decider interface {
	Decide(x *Exchange, d *Decision)
}

// Decide records a policy decision made on the request: the decision
// record names the request id, the peer's verified identity and address,
// the request line and the destination. It does nothing when decisions
// are not recorded, and allocates nothing.
func (x *Exchange) Decide(d *Decision) {
	if x.Decisions != nil {
		x.Decisions.Decide(x, d)
	}
}
