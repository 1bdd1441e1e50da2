package guard

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// The modules below are assembled by hand so that each test shows the
// exact bytes it rewrites.

func sec(id byte, body ...byte) []byte {
	return append(append([]byte{id}, appendU32(nil, uint32(len(body)))...), body...)
}

func module(sections ...[]byte) []byte {
	m := []byte("\x00asm\x01\x00\x00\x00")
	for _, s := range sections {
		m = append(m, s...)
	}
	return m
}

func code(bodies ...[]byte) []byte {
	b := appendU32(nil, uint32(len(bodies)))
	for _, f := range bodies {
		b = appendU32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return sec(secCode, b...)
}

var (
	typeVoid = sec(1, 1, 0x60, 0, 0) // one type: () -> ()
	// spin: loop br 0 end, with no local.
	spin = []byte{0, opLoop, 0x40, 0x0C, 0, 0x0B, 0x0B}
)

// spinner is a module whose export "run" never returns, and which has no
// global section: Instrument adds one.
func spinner() []byte {
	return module(typeVoid,
		sec(3, 1, 0), // one function of type 0
		sec(secExport, 1, 3, 'r', 'u', 'n', kindFunc, 0), // export "run"
		code(spin))
}

// host is the import a rewritten module calls: it counts its calls and
// answers stop once told to.
type host struct {
	calls atomic.Int64
	stop  atomic.Bool
}

// cache is the compiled code cache of proxy/wasm's tests, which compile
// the same rewritten modules.
var cache = func() wazero.CompilationCache {
	c, err := wazero.NewCompilationCacheWithDir(filepath.Join(os.TempDir(), "wasmgate-wasm-test-cache"))
	if err != nil {
		return wazero.NewCompilationCache()
	}
	return c
}()

func newRuntime(t testing.TB, h *host) wazero.Runtime {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler().WithCompilationCache(cache))
	t.Cleanup(func() { rt.Close(ctx) })
	if h == nil {
		h = new(host)
	}
	_, err := rt.NewHostModuleBuilder(Module).NewFunctionBuilder().
		WithFunc(func() uint32 {
			h.calls.Add(1)
			if h.stop.Load() {
				return 1
			}
			return 0
		}).Export(Check).Instantiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func instantiate(t *testing.T, bin []byte, h *host) api.Module {
	t.Helper()
	out, err := Instrument(bin)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := newRuntime(t, h).Instantiate(context.Background(), out)
	if err != nil {
		t.Fatalf("instantiating the rewritten module: %v", err)
	}
	return mod
}

// TestCheckStopsEndlessLoop: a guest in a loop that never ends calls the
// check every Interval iterations, lets the garbage collector stop the
// world meanwhile, and traps once the check says stop.
func TestCheckStopsEndlessLoop(t *testing.T) {
	h := new(host)
	mod := instantiate(t, spinner(), h)
	done := make(chan error, 1)
	go func() {
		_, err := mod.ExportedFunction("run").Call(context.Background())
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("run returned before the check said stop: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	gc := make(chan struct{})
	go func() {
		runtime.GC()
		close(gc)
	}()
	select {
	case <-gc:
	case <-time.After(5 * time.Second):
		t.Fatal("a collection could not stop the world while the guest ran")
	}
	if h.calls.Load() == 0 {
		t.Fatal("the loop never called the check")
	}
	start := time.Now()
	h.stop.Store(true)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "unreachable") {
			t.Fatalf("err = %v, want an unreachable trap", err)
		}
		t.Logf("stopped %v after the check said stop; %d checks", time.Since(start), h.calls.Load())
	case <-time.After(5 * time.Second):
		t.Fatal("the loop kept running after the check said stop")
	}
}

// TestRenumbering runs a module whose functions call each other directly
// and through a table, in nested loops and blocks with results and loop
// parameters: the new imports shift every function's index by Copies,
// and the results must not change. sum(n) adds 1..n; twice(n) calls sum and
// doubles it; indirect(n) calls sum through table slot 0.
func TestRenumbering(t *testing.T) {
	// (func $sum (param $n i32) (result i32) (local $s i32)
	//   (block (loop
	//     (br_if 1 (i32.eqz (local.get $n)))
	//     (local.set $s (i32.add (local.get $s) (local.get $n)))
	//     (i32.const 5) (loop (param i32) (result i32) (drop) (i32.const 0)) (drop)
	//     (local.set $n (i32.sub (local.get $n) (i32.const 1)))
	//     (br 0)))
	//   (local.get $s))
	sum := []byte{
		1, 1, 0x7F,
		0x02, 0x40, opLoop, 0x40,
		0x20, 0, 0x45, 0x0D, 1,
		0x20, 1, 0x20, 0, 0x6A, 0x21, 1,
		0x41, 5, opLoop, 1, 0x1A, 0x41, 0, 0x0B, 0x1A,
		0x20, 0, 0x41, 1, 0x6B, 0x21, 0,
		0x0C, 0,
		0x0B, 0x0B,
		0x20, 1, 0x0B,
	}
	twice := []byte{0, 0x20, 0, 0x10, 0, 0x41, 2, 0x6C, 0x0B} // sum(n) * 2
	indirect := []byte{0, 0x20, 0, 0x41, 0, 0x11, 0, 0, 0x0B} // call_indirect type 0, slot 0
	exports := []byte{3, 3, 's', 'u', 'm', kindFunc, 0, 5, 't', 'w', 'i', 'c', 'e', kindFunc, 1}
	exports = append(exports, 8, 'i', 'n', 'd', 'i', 'r', 'e', 'c', 't', kindFunc, 2)
	bin := module(
		sec(secType, 2, 0x60, 1, 0x7F, 1, 0x7F, 0x60, 1, 0x7F, 1, 0x7F), // types 0, 1: (i32) -> i32
		sec(3, 3, 0, 0, 0),
		sec(4, 1, 0x70, 0x00, 0x01),               // a table of one funcref
		sec(secGlobal, 1, 0x7F, 1, 0x41, 0, 0x0B), // a global of the module's own
		sec(secExport, exports...),
		sec(secElem, 1, 0x00, 0x41, 0x00, 0x0B, 1, 0), // slot 0: sum
		code(sum, twice, indirect),
		sec(secCustom, append([]byte{4}, "name\x01\x06\x01\x00\x03sum"...)...))
	out, err := Instrument(bin)
	if err != nil {
		t.Fatal(err)
	}
	rt := newRuntime(t, nil)
	cm, err := rt.CompileModule(context.Background(), out)
	if err != nil {
		t.Fatal(err)
	}
	if name := cm.ExportedFunctions()["sum"].Name(); name != "sum" {
		t.Errorf("the name section names sum %q", name)
	}
	mod, err := rt.InstantiateModule(context.Background(), cm, wazero.NewModuleConfig())
	if err != nil {
		t.Fatal(err)
	}
	for fn, want := range map[string]uint64{"sum": 5050, "twice": 10100, "indirect": 5050} {
		res, err := mod.ExportedFunction(fn).Call(context.Background(), 100)
		if err != nil {
			t.Fatalf("%s: %v", fn, err)
		}
		if res[0] != want {
			t.Errorf("%s(100) = %d, want %d", fn, res[0], want)
		}
	}
}

// TestStartBecomesExport: the start function no longer runs while the
// module is instantiated; the host calls it through Start.
func TestStartBecomesExport(t *testing.T) {
	// global $g (mut i32) exported as "g"; start sets it to 7.
	bin := module(typeVoid,
		sec(3, 1, 0),
		sec(secGlobal, 1, 0x7F, 1, 0x41, 0, 0x0B),
		sec(secExport, 1, 1, 'g', kindGlobal, 0),
		sec(secStart, 0),
		code([]byte{0, 0x41, 7, 0x24, 0, 0x0B}))
	mod := instantiate(t, bin, nil)
	if g := mod.ExportedGlobal("g").Get(); g != 0 {
		t.Fatalf("g = %d after instantiation: the start function ran", g)
	}
	if _, err := mod.ExportedFunction(Start).Call(context.Background()); err != nil {
		t.Fatal(err)
	}
	if g := mod.ExportedGlobal("g").Get(); g != 7 {
		t.Fatalf("g = %d after %s, want 7", g, Start)
	}
}

func TestSectionsStayInOrder(t *testing.T) {
	// No import, global or export section at all; a start function, a
	// custom section at the end, and DWARF that must go.
	dwarf := sec(secCustom, append([]byte{12}, ".debug_info\x00"...)...)
	named := sec(secCustom, append([]byte{4}, "name"...)...)
	bin := module(typeVoid, sec(3, 1, 0), sec(secStart, 0), code(spin), dwarf, named)
	out, err := Instrument(bin)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte(".debug_info")) {
		t.Error("DWARF kept")
	}
	if !bytes.Contains(out, []byte("name")) {
		t.Error("name section dropped")
	}
	cm, err := newRuntime(t, nil).CompileModule(context.Background(), out)
	if err != nil {
		t.Fatal(err)
	}
	if cm.ExportedFunctions()[Start] == nil {
		t.Error("no start export")
	}
	if _, err := Instrument(out); err == nil || !strings.Contains(err.Error(), "already imports") {
		t.Fatalf("instrumenting twice: %v", err)
	}
}

func TestMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		bin  []byte
		want string
	}{
		{"empty", nil, "not a WebAssembly"},
		{"version 2", []byte("\x00asm\x02\x00\x00\x00"), "not a WebAssembly"},
		{"section past the end", append(module(), 1, 10, 0), "unexpected end"},
		{"unknown section", module(sec(14)), "unknown section"},
		{"unknown opcode", module(typeVoid, sec(3, 1, 0), code([]byte{0, 0xFB, 0, 0x0B})), "unknown opcode"},
		{"unterminated body", module(typeVoid, sec(3, 1, 0), code([]byte{0, opLoop, 0x40, 0x0B})), "inside a block"},
		{"bytes after the end", module(typeVoid, sec(3, 1, 0), code([]byte{0, 0x0B, 0x01})), "after the body"},
		{"long LEB", module(typeVoid, sec(3, 1, 0), code([]byte{0, 0x41, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x0B})), "too long"},
		{"import kind", module(sec(secImport, 1, 1, 'a', 1, 'b', 9)), "unknown import kind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Instrument(tc.bin); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// realModules are the project's own .wasm files: Go modules of several
// MB (plugins, the SDK's example, the host's test modules) and WAT ones.
func realModules(t testing.TB) []string {
	var files []string
	for _, pattern := range []string{
		"../../testdata/*.wasm",
		"../../../../plugins/*/*.wasm",
		"../../../../sdk/examples/*/*.wasm",
	} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 8 {
		t.Fatalf("found only %d modules", len(files))
	}
	return files
}

func TestRealModules(t *testing.T) {
	rt := newRuntime(t, nil)
	for _, f := range realModules(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			bin, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out, err := Instrument(bin)
			if err != nil {
				t.Fatal(err)
			}
			cm, err := rt.CompileModule(context.Background(), out)
			if err != nil {
				t.Fatalf("compiling the instrumented module: %v", err)
			}
			defer cm.Close(context.Background())
			exp := cm.ExportedFunctions()
			if exp["proxy_abi_version_0_2_1"] == nil && exp["proxy_abi_version_0_2_0"] == nil && !strings.Contains(f, "noabi") && !strings.Contains(f, "ops") {
				t.Error("ABI marker lost")
			}
			t.Logf("%d -> %d bytes", len(bin), len(out))
		})
	}
}

// FuzzInstrument: no input panics, and a rewrite is a module the rewriter
// reads again (and refuses, as rewritten already). That wazero compiles
// the rewrites is TestRealModules' part: on arbitrary bytes wazero's own
// decoder may allocate what a header claims, which would stall the fuzzer.
func FuzzInstrument(f *testing.F) {
	f.Add(spinner())
	for _, name := range []string{"../../testdata/minimal.wasm", "../../testdata/noabi.wasm", "../../testdata/ops.wasm"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, bin []byte) {
		out, err := Instrument(bin)
		if err != nil {
			return
		}
		if _, err := Instrument(out); err == nil || !strings.Contains(err.Error(), "already imports") {
			t.Fatalf("the rewrite does not read back: %v", err)
		}
	})
}

// BenchmarkInstrument rewrites the SDK's hello, a 2.7 MB Go module: a
// cost paid once per module, before compiling, at load or reload.
func BenchmarkInstrument(b *testing.B) {
	bin, err := os.ReadFile("../../../../sdk/examples/hello/hello.wasm")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(bin)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Instrument(bin); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSameResults runs every export of testdata's ops module (the
// instruction families of other toolchains: SIMD, bulk memory, tables,
// reference types, multi-value, conversions) before and after the
// rewrite: each must return the same value.
func TestSameResults(t *testing.T) {
	bin, err := os.ReadFile("../../testdata/ops.wasm")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	orig, err := newRuntime(t, nil).Instantiate(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	rewritten := instantiate(t, bin, nil)
	if _, err := rewritten.ExportedFunction(Start).Call(ctx); err != nil {
		t.Fatal(err)
	}
	names := []string{"started", "control", "multivalue", "simd", "bulk", "numeric", "refs"}
	if got := len(orig.ExportedFunctionDefinitions()); got != len(names) {
		t.Fatalf("ops exports %d functions, the test knows %d", got, len(names))
	}
	for _, name := range names {
		want, err := orig.ExportedFunction(name).Call(ctx)
		if err != nil {
			t.Fatalf("%s, original: %v", name, err)
		}
		got, err := rewritten.ExportedFunction(name).Call(ctx)
		if err != nil {
			t.Fatalf("%s, rewritten: %v", name, err)
		}
		if got[0] != want[0] {
			t.Errorf("%s = %#x, the original returns %#x", name, got[0], want[0])
		} else {
			t.Logf("%s = %#x", name, got[0])
		}
	}
}

// TestLegacyExceptions: a try block ends with end or with delegate, and
// the loops inside both get their check (wazero does not run these, so
// the test reads the rewrite).
func TestLegacyExceptions(t *testing.T) {
	body := []byte{
		0,
		0x06, 0x40, opLoop, 0x40, 0x0B, 0x19, 0x0B, // try (loop end) catch_all end
		0x06, 0x40, opLoop, 0x40, 0x0B, 0x18, 0, // try (loop end) delegate 0
		0x0B,
	}
	out, err := Instrument(module(typeVoid, sec(3, 1, 0), code(body)))
	if err != nil {
		t.Fatal(err)
	}
	rw := &rewrite{fuel: 0}
	if n := bytes.Count(out, rw.checkCode(0)); n != 2 {
		t.Fatalf("%d checks in the rewrite, want 2", n)
	}
}

// TestCopiesKeepLayout: the rewritten module imports Check Copies times,
// and together they take a multiple of 128 bytes of wazero's context, so
// that what follows them keeps its offsets modulo 128 (package comment).
func TestCopiesKeepLayout(t *testing.T) {
	if Copies*importSize%128 != 0 {
		t.Fatalf("%d imports of %d bytes move the context's globals by %d bytes, not a multiple of 128",
			Copies, importSize, Copies*importSize)
	}
	bin := module(typeVoid, sec(3, 1, 0), code(spin))
	out, err := Instrument(bin)
	if err != nil {
		t.Fatal(err)
	}
	cm, err := newRuntime(t, nil).CompileModule(context.Background(), out)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range cm.ImportedFunctions() {
		if mod, name, _ := f.Import(); mod == Module && name == Check {
			n++
		}
	}
	if n != Copies {
		t.Fatalf("the rewritten module imports %s.%s %d times, want %d", Module, Check, n, Copies)
	}
}
