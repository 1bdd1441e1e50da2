;; A filter whose callbacks return results other than the ABI's CONTINUE
;; and PAUSE, as modules of other SDKs do (the C++ SDK's
;; FilterHeadersStatus: ContinueAndEndStream 2, StopAllIterationAndBuffer
;; 3, StopAllIterationAndWatermark 4). Request headers, the request body
;; and response headers return the length of :path less one: "/" gives 0,
;; "/ab" gives 2, "/abcd" gives 4. A :path of ten bytes ("/closeabcd")
;; closes the request with proxy_close_stream instead.
(module
  (import "env" "proxy_get_header_map_value"
    (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))

  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 8192))
  (global $result (mut i32) (i32.const 0))

  (data (i32.const 1024) ":path")

  (func (export "proxy_abi_version_0_2_1"))
  (func (export "_start"))

  (func (export "malloc") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap
      (i32.and (i32.add (i32.add (local.get $p) (local.get $size)) (i32.const 7))
               (i32.const -8)))
    (local.get $p))

  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))

  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $heap (i32.const 8192))
    (global.set $result (i32.const 0))
    (if (i32.eqz (call $get (i32.const 0) (i32.const 1024) (i32.const 5)
                            (i32.const 512) (i32.const 516)))
      (then (global.set $result (i32.sub (i32.load (i32.const 516)) (i32.const 1)))))
    (if (i32.eq (global.get $result) (i32.const 9))
      (then
        (drop (call $close (i32.const 0)))
        (global.set $result (i32.const 0))))
    (global.get $result))

  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (global.get $result))

  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (global.get $result))

  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
)
