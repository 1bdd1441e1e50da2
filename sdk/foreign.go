package sdk

// CallForeignFunction calls a function the host offers beyond the ABI
// (proxy_call_foreign_function) with args, and returns its result. A
// host that does not offer name answers with an error that wraps
// ErrNotFound: foreign functions are each host's own (Envoy's are
// Envoy's), so a filter that uses one keeps a way of its own for hosts
// without it. wasmgate's are listed in its proxy/wasm/README.md.
func CallForeignFunction(name string, args []byte) ([]byte, error) {
	out, st := hostCallForeign(name, args)
	if err := check("proxy_call_foreign_function", st); err != nil {
		return nil, err
	}
	return out, nil
}
