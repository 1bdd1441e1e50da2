// Package guard rewrites a WebAssembly module so that a call into it
// checks its own deadline, without a goroutine per call to watch it.
//
// Instrument adds to the module an import, Module.Check (a function of
// no parameters returning an i32), a mutable i32 global that counts down,
// and at the head of every loop a decrement of that counter. When the
// counter reaches zero the guest calls Check, and traps (`unreachable`) if
// Check returns non-zero; otherwise the counter restarts from Interval.
// Every endless execution of a Wasm function either passes a loop header
// again and again (the only backward branch in Wasm is to a loop) or
// recurses until its stack overflows, so a host whose Check compares the
// clock with the call's deadline stops any call soon after its deadline.
//
// The check in the guest is a few instructions. The call to Check, every
// Interval loop iterations, leaves the guest's machine code for Go, which
// is also what lets the Go runtime stop the world for its garbage
// collector while a guest runs: machine code that never returns to Go
// would stall every goroutine of the process at the next collection,
// including any goroutine meant to stop it.
//
// The import is added Copies times over, and the check calls the first.
// Each imported function takes 24 bytes of the context wazero keeps for an
// instance, ahead of the module's globals, its tables and the rest, which
// the guest's machine code reads and writes all the time. A single import
// moved them all by 32 bytes, and with that layout the first-party filters
// ran 20% to 80% slower than the same module unrewritten, depending on
// where the context landed (benchmarks/COMPONENTS.md). Copies imports
// move them by 384 bytes, a multiple of 128; Go allocates a context of
// 1 KiB or more (the first-party module's, with its 41 imports, is about
// 1.2 KiB) at an address aligned to 128 bytes, so everything in it keeps
// its place within the cache lines it had before the rewrite. A smaller
// context may change allocation class and alignment with the rewrite. The
// new imports shift the index of every function the module defines by
// Copies; Instrument renumbers them everywhere (calls, ref.func, exports,
// element segments, the "name" section). The module's start function,
// which would run while the module is instantiated, before the host has
// set a deadline, is exported as Start instead, for the host to call once
// instantiation is done. DWARF sections (".debug_*") describe code
// offsets that the rewrite moves, and are dropped.
package guard

import (
	"errors"
	"fmt"
	"strings"
)

const (
	// Module and Check name the import the rewritten module calls.
	Module = "wasmgate"
	Check  = "check_deadline"
	// Start is the export name of the module's start function, when it
	// has one.
	Start = "wasmgate.start"
	// Interval is how many loop iterations pass between calls to Check.
	Interval = 1024
	// Copies is how many times the rewritten module imports Check (see
	// the package comment): Copies*importSize is a multiple of 128.
	Copies = 16
)

// importSize is the room an imported function takes in wazero's
// per-instance context (its wazevoapi.FunctionInstanceSize).
const importSize = 24

// Section ids, and the encodings the rewrite writes.
const (
	secCustom   = 0
	secType     = 1
	secImport   = 2
	secGlobal   = 6
	secExport   = 7
	secStart    = 8
	secElem     = 9
	secCode     = 10
	kindFunc    = 0x00
	kindGlobal  = 0x03
	opLoop      = 0x03
	opGlobalGet = 0x23
)

// order is the position of each known section in a module (custom
// sections may appear anywhere).
var order = [...]int{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13}

// Instrument returns module rewritten as the package comment says. It
// does not modify module. An error means a module it cannot rewrite:
// malformed, or using what it does not know (the GC proposal's types and
// instructions, for one).
func Instrument(module []byte) ([]byte, error) {
	if len(module) < 8 || string(module[:4]) != "\x00asm" || string(module[4:8]) != "\x01\x00\x00\x00" {
		return nil, errors.New("not a WebAssembly 1.0 binary module")
	}
	type section struct {
		id   byte
		body []byte
	}
	var secs []section
	r := reader{b: module, off: 8}
	for r.more() {
		id := r.byte()
		size := r.u32()
		body := r.bytes(int(size))
		if r.err != nil {
			return nil, fmt.Errorf("section at offset %d: %w", r.off, r.err)
		}
		if id != secCustom && (int(id) >= len(order) || order[id] == 0) {
			return nil, fmt.Errorf("unknown section id %d", id)
		}
		secs = append(secs, section{id, body})
	}

	// First pass: the counts the rewrite depends on.
	var (
		types, importedFuncs, importedGlobals, definedGlobals uint32
		start                                                 = -1
		have                                                  = map[byte]bool{}
	)
	for _, s := range secs {
		have[s.id] = true
		r := reader{b: s.body}
		var err error
		switch s.id {
		case secType:
			types, err = countTypes(s.body)
		case secImport:
			importedFuncs, importedGlobals, err = countImports(s.body)
		case secGlobal:
			definedGlobals = r.u32()
			err = r.err
		case secStart:
			start = int(r.u32())
			err = r.err
		}
		if err != nil {
			return nil, fmt.Errorf("section %d: %w", s.id, err)
		}
	}
	rw := &rewrite{
		imported: importedFuncs,
		fuel:     importedGlobals + definedGlobals,
	}
	rw.check = rw.checkCode(importedFuncs) // the first of the new imports
	if start >= 0 {
		rw.hasStart, rw.start = true, rw.fix(uint32(start))
	}

	out := make([]byte, 0, len(module)+len(module)/16+64)
	out = append(out, module[:8]...)
	emit := func(id byte, body []byte) {
		out = append(out, id)
		out = appendU32(out, uint32(len(body)))
		out = append(out, body...)
	}
	// Sections the module lacks are added where the order puts them.
	added := map[byte]bool{}
	addMissing := func(before int) {
		for _, id := range []byte{secType, secImport, secGlobal, secExport} {
			if have[id] || added[id] || order[id] >= before || (id == secExport && start < 0) {
				continue
			}
			added[id] = true
			b, _ := rw.section(id, appendU32(nil, 0), types)
			emit(id, b)
		}
	}
	for _, s := range secs {
		if s.id != secCustom {
			addMissing(order[s.id])
		}
		switch s.id {
		case secCustom:
			b, keep := rw.custom(s.body)
			if keep {
				emit(s.id, b)
			}
		case secStart:
			// exported as Start instead
		default:
			b, err := rw.section(s.id, s.body, types)
			if err != nil {
				return nil, fmt.Errorf("section %d: %w", s.id, err)
			}
			emit(s.id, b)
		}
	}
	addMissing(len(order) + 1)
	return out, nil
}

// rewrite holds what the rewrite of each section needs.
type rewrite struct {
	imported uint32 // functions imported by the module: the first new import's index
	fuel     uint32 // index of the counter global
	hasStart bool   // the module has a start function, at index start
	start    uint32 // (after the rewrite)
	check    []byte // inserted after each loop's block type
}

// fix maps a function index of the module to its index after the new
// import.
func (rw *rewrite) fix(idx uint32) uint32 {
	if idx >= rw.imported {
		return idx + Copies
	}
	return idx
}

// checkCode is the check inserted at each loop header:
//
//	global.get $fuel  i32.const 1  i32.sub  global.set $fuel
//	global.get $fuel  i32.eqz
//	if
//	  call $check  if unreachable end
//	  i32.const Interval  global.set $fuel
//	end
func (rw *rewrite) checkCode(checkFn uint32) []byte {
	g := appendU32(nil, rw.fuel)
	b := []byte{opGlobalGet}
	b = append(b, g...)
	b = append(b, 0x41, 0x01, 0x6B, 0x24)
	b = append(b, g...)
	b = append(b, opGlobalGet)
	b = append(b, g...)
	b = append(b, 0x45, 0x04, 0x40, 0x10)
	b = appendU32(b, checkFn)
	b = append(b, 0x04, 0x40, 0x00, 0x0B, 0x41)
	b = appendS32(b, Interval)
	b = append(b, 0x24)
	b = append(b, g...)
	return append(b, 0x0B)
}

// section rewrites one known section's body.
func (rw *rewrite) section(id byte, body []byte, types uint32) ([]byte, error) {
	r := reader{b: body}
	e := &editor{src: body, check: rw.check, rw: rw}
	switch id {
	case secType: // one more type: () -> i32
		n := r.u32()
		e.replace(0, r.off, appendU32(nil, n+1))
		e.replace(len(body), len(body), []byte{0x60, 0x00, 0x01, 0x7F})
		r.off = len(body) // read by countTypes
	case secImport: // Copies more function imports, of that type
		n := r.u32()
		e.replace(0, r.off, appendU32(nil, n+Copies))
		var imp []byte
		for range Copies {
			imp = appendName(imp, Module)
			imp = appendName(imp, Check)
			imp = append(imp, kindFunc)
			imp = appendU32(imp, types)
		}
		e.replace(len(body), len(body), imp)
		r.off = len(body) // read by countImports
	case secGlobal: // one more global; ref.func in initializers renumbered
		n := r.u32()
		e.replace(0, r.off, appendU32(nil, n+1))
		for i := uint32(0); i < n && r.err == nil; i++ {
			r.valType()
			r.byte()
			if err := r.expr(e); err != nil {
				return nil, err
			}
		}
		g := []byte{0x7F, 0x01, 0x41}
		g = appendS32(g, Interval)
		e.replace(len(body), len(body), append(g, 0x0B))
	case secExport: // functions renumbered; Start added
		n := r.u32()
		if rw.hasStart {
			e.replace(0, r.off, appendU32(nil, n+1))
		}
		for i := uint32(0); i < n && r.err == nil; i++ {
			if name := r.name(); name == Start {
				return nil, fmt.Errorf("module already exports %q", name)
			}
			if kind := r.byte(); kind == kindFunc {
				r.funcIndex(e)
			} else {
				r.u32()
			}
		}
		if rw.hasStart {
			exp := appendName(nil, Start)
			exp = append(exp, kindFunc)
			e.replace(len(body), len(body), appendU32(exp, rw.start))
		}
	case secElem:
		if err := r.elements(e); err != nil {
			return nil, err
		}
	case secCode:
		n := r.u32()
		for i := uint32(0); i < n && r.err == nil; i++ {
			sizeAt := r.off
			size := r.u32()
			bodyAt := r.off
			fn := r.bytes(int(size))
			if r.err != nil {
				break
			}
			b, err := rw.function(fn)
			if err != nil {
				return nil, fmt.Errorf("function %d: %w", i, err)
			}
			e.replace(sizeAt, bodyAt+int(size), append(appendU32(nil, uint32(len(b))), b...))
		}
	default: // no function indices
		return body, nil
	}
	if r.err == nil && r.more() {
		r.err = errors.New("bytes after the last entry")
	}
	if r.err != nil {
		return nil, r.err
	}
	return e.finish(), nil
}

// function rewrites one function body: locals, then its expression.
func (rw *rewrite) function(code []byte) ([]byte, error) {
	r := reader{b: code}
	groups := r.u32()
	for i := uint32(0); i < groups && r.err == nil; i++ {
		r.u32()
		r.valType()
	}
	if r.err != nil {
		return nil, fmt.Errorf("locals: %w", r.err)
	}
	e := &editor{src: code, check: rw.check, rw: rw}
	if err := r.expr(e); err != nil {
		return nil, err
	}
	if r.more() {
		return nil, errors.New("bytes after the body's end")
	}
	return e.finish(), nil
}

// custom returns a custom section as the rewritten module keeps it, and
// whether it keeps it: DWARF goes, the "name" section is renumbered (or
// dropped when it cannot be read: it is only debugging information).
func (rw *rewrite) custom(body []byte) ([]byte, bool) {
	r := reader{b: body}
	name := r.name()
	switch {
	case r.err != nil, strings.HasPrefix(name, ".debug_"):
		return nil, false
	case name == "name":
		b, err := rw.names(body, r.off)
		return b, err == nil
	}
	return body, true
}

// names renumbers the functions of a "name" section's function names (1),
// local names (2) and label names (3); its other subsections name other
// index spaces.
func (rw *rewrite) names(body []byte, at int) ([]byte, error) {
	r := reader{b: body, off: at}
	out := append([]byte(nil), body[:at]...)
	for r.more() {
		id := r.byte()
		sub := r.bytes(int(r.u32()))
		if r.err != nil {
			return nil, r.err
		}
		if id >= 1 && id <= 3 {
			sr := reader{b: sub}
			e := &editor{src: sub, rw: rw}
			n := sr.u32()
			for i := uint32(0); i < n && sr.err == nil; i++ {
				sr.funcIndex(e)
				if id == 1 {
					sr.name()
					continue
				}
				m := sr.u32()
				for j := uint32(0); j < m && sr.err == nil; j++ {
					sr.u32()
					sr.name()
				}
			}
			if sr.err == nil && sr.more() {
				sr.err = errors.New("bytes after the last name")
			}
			if sr.err != nil {
				return nil, sr.err
			}
			sub = e.finish()
		}
		out = append(out, id)
		out = appendU32(out, uint32(len(sub)))
		out = append(out, sub...)
	}
	return out, nil
}

// editor copies src to out with replacements, made in increasing order
// of position.
type editor struct {
	src    []byte
	out    []byte
	copied int
	check  []byte // inserted after each loop's block type; nil: none
	rw     *rewrite
}

// replace replaces src[start:end] with b.
func (e *editor) replace(start, end int, b []byte) {
	e.out = append(e.out, e.src[e.copied:start]...)
	e.out = append(e.out, b...)
	e.copied = end
}

func (e *editor) finish() []byte { return append(e.out, e.src[e.copied:]...) }

// funcIndex reads a function index and, through e, renumbers it.
func (r *reader) funcIndex(e *editor) {
	start := r.off
	idx := r.u32()
	if e == nil || r.err != nil {
		return
	}
	if f := e.rw.fix(idx); f != idx {
		e.replace(start, r.off, appendU32(nil, f))
	}
}

// elements reads an element section, renumbering its functions through e.
func (r *reader) elements(e *editor) error {
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		flags := r.u32()
		if flags > 7 {
			return fmt.Errorf("element segment %d: unknown flags %d", i, flags)
		}
		if flags&3 == 2 { // an explicit table index
			r.u32()
		}
		if flags&1 == 0 { // active: an offset
			if err := r.expr(e); err != nil {
				return err
			}
		}
		if flags&3 != 0 { // an element kind, or a reference type
			if flags&4 != 0 {
				r.valType()
			} else {
				r.byte()
			}
		}
		m := r.u32()
		for j := uint32(0); j < m && r.err == nil; j++ {
			if flags&4 != 0 { // expressions
				if err := r.expr(e); err != nil {
					return err
				}
			} else {
				r.funcIndex(e)
			}
		}
	}
	return r.err
}

// countTypes reads a type section, which must hold function types only.
func countTypes(body []byte) (uint32, error) {
	r := reader{b: body}
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		if form := r.byte(); form != 0x60 && r.err == nil {
			return 0, fmt.Errorf("type %d: form %#x is not supported", i, form)
		}
		for range 2 { // parameters, results
			m := r.u32()
			for j := uint32(0); j < m && r.err == nil; j++ {
				r.valType()
			}
		}
	}
	if r.err == nil && r.more() {
		r.err = errors.New("bytes after the last type")
	}
	return n, r.err
}

// countImports reads an import section and counts its functions and
// globals, which come first in their index spaces.
func countImports(body []byte) (funcs, globals uint32, err error) {
	r := reader{b: body}
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		module, name := r.name(), r.name()
		if module == Module && name == Check {
			return 0, 0, fmt.Errorf("module already imports %s.%s", Module, Check)
		}
		switch kind := r.byte(); kind {
		case 0x00: // function: type index
			r.u32()
			funcs++
		case 0x01: // table: reference type, limits
			r.valType()
			r.limits()
		case 0x02: // memory: limits
			r.limits()
		case 0x03: // global: value type, mutability
			r.valType()
			r.byte()
			globals++
		case 0x04: // tag: attribute, type index
			r.byte()
			r.u32()
		default:
			if r.err == nil {
				return 0, 0, fmt.Errorf("unknown import kind %#x", kind)
			}
		}
	}
	if r.err == nil && r.more() {
		r.err = errors.New("bytes after the last import")
	}
	return funcs, globals, r.err
}

// expr reads instructions up to the end that closes the expression (a
// function body or a constant expression). When e is not nil it inserts
// e's check after each loop's block type and renumbers the function
// indices of call, return_call and ref.func.
func (r *reader) expr(e *editor) error {
	depth := 1 // the expression's own block, closed by its last end
	for depth > 0 {
		if !r.more() {
			return errors.New("expression ends inside a block")
		}
		op := r.byte()
		switch op {
		case 0x02, 0x04, 0x06: // block, if, try
			r.blockType()
			depth++
		case opLoop:
			r.blockType()
			depth++
			if r.err == nil && e != nil && e.check != nil {
				e.replace(r.off, r.off, e.check)
			}
		case 0x1F: // try_table
			r.blockType()
			n := r.u32()
			for i := uint32(0); i < n && r.err == nil; i++ {
				switch r.byte() {
				case 0x00, 0x01: // catch, catch_ref: tag, label
					r.u32()
					r.u32()
				case 0x02, 0x03: // catch_all, catch_all_ref: label
					r.u32()
				default:
					return fmt.Errorf("unknown catch clause at %d", r.off-1)
				}
			}
			depth++
		case 0x0B: // end
			depth--
		case 0x00, 0x01, 0x05, 0x0A, 0x0F, 0x19, 0x1A, 0x1B, 0xD1, 0xD3, 0xD4:
			// no immediates
		case 0x10, 0x12, 0xD2: // call, return_call, ref.func
			r.funcIndex(e)
		case 0x18: // delegate: ends a (legacy) try block, as end does
			r.u32()
			depth--
		case 0x07, 0x08, 0x09, 0x0C, 0x0D, 0x14, 0x15,
			0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x3F, 0x40, 0xD5, 0xD6:
			r.u32()
		case 0x11, 0x13: // call_indirect, return_call_indirect
			r.u32()
			r.u32()
		case 0x0E: // br_table
			n := r.u32()
			for i := uint64(0); i <= uint64(n) && r.err == nil; i++ {
				r.u32()
			}
		case 0x1C: // select with types
			n := r.u32()
			for i := uint32(0); i < n && r.err == nil; i++ {
				r.valType()
			}
		case 0x41:
			r.leb(5)
		case 0x42:
			r.leb(10)
		case 0x43:
			r.bytes(4)
		case 0x44:
			r.bytes(8)
		case 0xD0: // ref.null heap type
			r.leb(5)
		case 0xFC:
			if err := r.miscImmediates(); err != nil {
				return err
			}
		case 0xFD:
			r.simdImmediates()
		case 0xFE:
			if err := r.atomicImmediates(); err != nil {
				return err
			}
		default:
			switch {
			case op >= 0x28 && op <= 0x3E: // loads and stores
				r.memArg()
			case op >= 0x45 && op <= 0xC4: // numeric
			default:
				return fmt.Errorf("unknown opcode %#x at %d", op, r.off-1)
			}
		}
		if r.err != nil {
			return fmt.Errorf("instruction at %d: %w", r.off, r.err)
		}
	}
	return nil
}

// miscImmediates skips the immediates of a 0xFC instruction.
func (r *reader) miscImmediates() error {
	switch sub := r.u32(); {
	case sub <= 7: // saturating truncations
	case sub == 8, sub == 10, sub == 12, sub == 14: // memory.init, memory.copy, table.init, table.copy
		r.u32()
		r.u32()
	case sub == 9, sub == 11, sub == 13, sub == 15, sub == 16, sub == 17:
		r.u32()
	default:
		return fmt.Errorf("unknown 0xFC instruction %d at %d", sub, r.off)
	}
	return nil
}

// simdImmediates skips the immediates of a 0xFD instruction; those not
// listed have none.
func (r *reader) simdImmediates() {
	switch sub := r.u32(); {
	case sub <= 11, sub == 92, sub == 93: // loads, stores
		r.memArg()
	case sub == 12, sub == 13: // v128.const, i8x16.shuffle
		r.bytes(16)
	case sub >= 21 && sub <= 34: // extract and replace lane
		r.byte()
	case sub >= 84 && sub <= 91: // load and store lane
		r.memArg()
		r.byte()
	}
}

// atomicImmediates skips the immediates of a 0xFE instruction.
func (r *reader) atomicImmediates() error {
	switch sub := r.u32(); {
	case sub == 3: // atomic.fence
		r.byte()
	case sub <= 2, sub >= 0x10 && sub <= 0x4E:
		r.memArg()
	default:
		return fmt.Errorf("unknown 0xFE instruction %d at %d", sub, r.off)
	}
	return nil
}

// reader reads a module's encoding; the first error sticks and later
// reads return zero values.
type reader struct {
	b   []byte
	off int
	err error
}

var errShort = errors.New("unexpected end")

func (r *reader) more() bool { return r.err == nil && r.off < len(r.b) }

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.err = errShort
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b)-r.off {
		r.err = errShort
		return nil
	}
	b := r.b[r.off : r.off+n]
	r.off += n
	return b
}

// leb skips a LEB128 number of at most max bytes.
func (r *reader) leb(max int) {
	for i := 0; ; i++ {
		if i == max {
			r.err = errors.New("LEB128 number too long")
			return
		}
		if r.byte()&0x80 == 0 || r.err != nil {
			return
		}
	}
}

func (r *reader) u32() uint32 {
	var v uint32
	for shift := 0; ; shift += 7 {
		if shift > 28 {
			r.err = errors.New("u32 too long")
			return 0
		}
		c := r.byte()
		if r.err != nil {
			return 0
		}
		v |= uint32(c&0x7F) << shift
		if c&0x80 == 0 {
			return v
		}
	}
}

func (r *reader) name() string {
	n := r.u32()
	return string(r.bytes(int(n)))
}

// valType skips a value type: one byte, or a reference type's prefix and
// heap type.
func (r *reader) valType() {
	if c := r.byte(); c == 0x63 || c == 0x64 {
		r.leb(5)
	}
}

// blockType skips a block type: empty, a value type, or a type index.
func (r *reader) blockType() {
	if r.err != nil || r.off >= len(r.b) {
		r.err = errShort
		return
	}
	if c := r.b[r.off]; c == 0x63 || c == 0x64 {
		r.valType()
		return
	}
	r.leb(5)
}

func (r *reader) limits() {
	flags := r.byte()
	r.leb(10)
	if flags&1 != 0 {
		r.leb(10)
	}
}

// memArg skips an alignment (with a memory index when its bit 6 is set)
// and an offset.
func (r *reader) memArg() {
	if r.u32()&0x40 != 0 {
		r.u32()
	}
	r.leb(10)
}

func appendU32(b []byte, v uint32) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func appendS32(b []byte, v int32) []byte {
	for {
		c := byte(v & 0x7F)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func appendName(b []byte, s string) []byte {
	b = appendU32(b, uint32(len(s)))
	return append(b, s...)
}
