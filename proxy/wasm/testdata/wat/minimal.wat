;; A proxy-wasm filter written by hand, with the conventions of a module
;; that is not built by Go: the ABI v0.2.1 marker, a command-style _start,
;; and an allocator exported as malloc (no proxy_on_memory_allocate).
;;
;; On request headers it adds x-wat: 0.2.1 and copies :path into
;; x-wat-path (the host hands :path back through malloc). On response
;; headers it traps with unreachable when the request path was 5 bytes
;; long ("/trap"), so tests can watch a real wasm trap.
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value"
    (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value"
    (func $get (param i32 i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 8192))
  (global $started (mut i32) (i32.const 0))
  (global $pathlen (mut i32) (i32.const 0))

  (data (i32.const 1024) "x-wat")
  (data (i32.const 1040) "0.2.1")
  (data (i32.const 1056) ":path")
  (data (i32.const 1072) "x-wat-path")
  (data (i32.const 1100) "wat plugin configured")

  (func (export "proxy_abi_version_0_2_1"))

  (func (export "_start")
    (global.set $started (i32.const 1)))

  ;; A bump allocator: memory is never freed, which is enough for a test.
  (func (export "malloc") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap
      (i32.and (i32.add (i32.add (local.get $p) (local.get $size)) (i32.const 7))
               (i32.const -8)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1))
        (then (return (i32.const 0))))))
    (local.get $p))

  (func (export "proxy_on_context_create") (param i32 i32))

  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (i32.const 1))

  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $log (i32.const 2) (i32.const 1100) (i32.const 21)))
    (global.get $started))

  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.eqz (global.get $started)) (then unreachable))
    (drop (call $add (i32.const 0) (i32.const 1024) (i32.const 5)
                     (i32.const 1040) (i32.const 5)))
    ;; :path -> (ptr at 512, size at 516)
    (if (i32.eqz (call $get (i32.const 0) (i32.const 1056) (i32.const 5)
                            (i32.const 512) (i32.const 516)))
      (then
        (global.set $pathlen (i32.load (i32.const 516)))
        (drop (call $add (i32.const 0) (i32.const 1072) (i32.const 10)
                         (i32.load (i32.const 512)) (i32.load (i32.const 516))))))
    (i32.const 0))

  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (if (i32.eq (global.get $pathlen) (i32.const 5)) (then unreachable))
    (i32.const 0))

  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
)
