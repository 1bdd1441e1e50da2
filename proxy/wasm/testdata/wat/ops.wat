;; Not a proxy-wasm filter: a module of the instruction families a module
;; built by another toolchain may use (SIMD, bulk memory, reference types,
;; tables, multi-value, saturating and sign-extending conversions, long
;; constants, br_table, typed select), for package guard's test that a
;; rewritten module computes what the original does. Every export takes
;; no parameter and returns an i64 that depends on what it ran.
(module
  (type $binop (func (param i32 i32) (result i32)))
  (memory 1)
  (table $t 4 8 funcref)
  (table $ext 2 externref)
  (global $counter (mut i32) (i32.const 0))
  (global $started (mut i64) (i64.const 0))
  (global $fref funcref (ref.func $add))

  (data $passive "wasmgate-guard-test-data")
  (data (i32.const 64) "\01\02\03\04\05\06\07\08\09\0a\0b\0c\0d\0e\0f\10")
  (elem (i32.const 0) $add $sub)
  (elem $later func $mul $add)
  (elem declare func $sub)

  (func $add (type $binop) (i32.add (local.get 0) (local.get 1)))
  (func $sub (type $binop) (i32.sub (local.get 0) (local.get 1)))
  (func $mul (type $binop) (i32.mul (local.get 0) (local.get 1)))

  (func $start
    (global.set $started (i64.const 0x123456789abcdef)))
  (start $start)

  (func (export "started") (result i64) (global.get $started))

  ;; Loops, nested blocks, br_table, calls direct and indirect.
  (func (export "control") (result i64)
    (local $i i32) (local $acc i64)
    (block $out
      (loop $top
        (br_if $out (i32.ge_u (local.get $i) (i32.const 200)))
        (block $b2 (block $b1 (block $b0
          (br_table $b0 $b1 $b2 (i32.rem_u (local.get $i) (i32.const 3))))
          ;; i % 3 == 0
          (local.set $acc (i64.add (local.get $acc)
            (i64.extend_i32_u (call $add (local.get $i) (i32.const 7)))))
          (br $b2))
        ;; i % 3 == 1
        (local.set $acc (i64.add (local.get $acc)
          (i64.extend_i32_u (call_indirect (type $binop)
            (local.get $i) (i32.const 3) (i32.const 1)))))) ;; $sub
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (global.set $counter (i32.add (global.get $counter) (i32.const 1)))
        (br $top)))
    (i64.add (local.get $acc) (i64.extend_i32_u (global.get $counter))))

  ;; Multi-value blocks and loops with parameters, typed select.
  (func $pair (result i32 i64) (i32.const 40) (i64.const 2))
  (func (export "multivalue") (result i64)
    (local $n i32) (local $a i32) (local $b i64)
    (call $pair)
    (loop $l (param i32 i64) (result i32 i64)
      (local.set $b) (local.set $a)
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (i32.add (local.get $a) (i32.const 1))
      (i64.mul (local.get $b) (i64.const 3))
      (br_if $l (i32.lt_u (local.get $n) (i32.const 10))))
    (local.set $b) (local.set $a)
    (i64.add (local.get $b)
      (i64.extend_i32_s (select (result i32) (local.get $a) (i32.const 6) (i32.const 0)))))

  ;; SIMD: constants, shuffle, lanes, loads and stores with lanes.
  (func (export "simd") (result i64)
    (local $v v128)
    (local.set $v (i8x16.shuffle 15 14 13 12 11 10 9 8 7 6 5 4 3 2 1 0
      (v128.load (i32.const 64))
      (v128.const i32x4 1 2 3 4)))
    (local.set $v (i32x4.add (local.get $v) (v128.const i64x2 0x0102030405060708 -1)))
    (v128.store offset=128 (i32.const 0) (local.get $v))
    (local.set $v (v128.load32_zero (i32.const 64)))
    (local.set $v (v128.load8_lane 3 (i32.const 70) (local.get $v)))
    (v128.store16_lane 1 (i32.const 200) (local.get $v))
    (i64.add
      (i64.add (i64.load (i32.const 128)) (i64.load (i32.const 136)))
      (i64.add
        (i64.extend_i32_u (i8x16.extract_lane_u 3 (local.get $v)))
        (i64.add (i64.extend_i32_u (i32.load16_u (i32.const 200)))
          (i64x2.extract_lane 0 (i64x2.replace_lane 0 (local.get $v) (i64.const 9)))))))

  ;; Bulk memory and tables.
  (func (export "bulk") (result i64)
    (memory.init $passive (i32.const 300) (i32.const 0) (i32.const 24))
    (data.drop $passive)
    (memory.copy (i32.const 400) (i32.const 300) (i32.const 24))
    (memory.fill (i32.const 410) (i32.const 0x2a) (i32.const 4))
    (table.init $t $later (i32.const 2) (i32.const 0) (i32.const 2))
    (elem.drop $later)
    (drop (table.grow $t (ref.func $sub) (i32.const 2)))
    (table.set $t (i32.const 5) (table.get $t (i32.const 0)))
    (table.copy $t $t (i32.const 4) (i32.const 2) (i32.const 1))
    (table.fill $t (i32.const 0) (ref.null func) (i32.const 0))
    (table.set $ext (i32.const 0) (ref.null extern))
    (i64.add
      (i64.add (i64.load (i32.const 400)) (i64.load (i32.const 408)))
      (i64.extend_i32_u (i32.add
        (i32.add (table.size $t) (ref.is_null (table.get $ext (i32.const 1))))
        (i32.add
          (call_indirect (type $binop) (i32.const 6) (i32.const 7) (i32.const 2))   ;; $mul
          (call_indirect (type $binop) (i32.const 6) (i32.const 7) (i32.const 4)))))))  ;; $mul, copied

  ;; Conversions and long constants.
  (func (export "numeric") (result i64)
    (i64.add
      (i64.add (i64.trunc_sat_f64_s (f64.const 1e300)) (i64.extend8_s (i64.const 0x80)))
      (i64.add
        (i64.extend_i32_s (i32.trunc_sat_f32_u (f32.const -3.5)))
        (i64.add (i64.const -0x7fffffffffffffff)
          (i64.reinterpret_f64 (f64.const -0x1.fffffffffffffp+1023))))))

  ;; A funcref global and ref.func in code.
  (func (export "refs") (result i64)
    (table.set $t (i32.const 1) (global.get $fref))
    (table.set $t (i32.const 3) (ref.func $sub))
    (i64.extend_i32_u (i32.add
      (call_indirect (type $binop) (i32.const 100) (i32.const 1) (i32.const 1))
      (call_indirect (type $binop) (i32.const 100) (i32.const 1) (i32.const 3)))))
)
