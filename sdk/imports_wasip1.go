//go:build wasip1

package sdk

import "unsafe"

// The env functions of proxy-wasm v0.2.1. Every pointer is an offset in
// this module's linear memory; every result is a proxy_status_t.

//go:wasmimport env proxy_log
func proxy_log(level uint32, msg unsafe.Pointer, size uint32) uint32

//go:wasmimport env proxy_get_log_level
func proxy_get_log_level(level unsafe.Pointer) uint32

//go:wasmimport env proxy_get_current_time_nanoseconds
func proxy_get_current_time_nanoseconds(t unsafe.Pointer) uint32

//go:wasmimport env proxy_set_tick_period_milliseconds
func proxy_set_tick_period_milliseconds(period uint32) uint32

//go:wasmimport env proxy_set_effective_context
func proxy_set_effective_context(id uint32) uint32

//go:wasmimport env proxy_get_buffer_bytes
func proxy_get_buffer_bytes(t, start, size uint32, ptr, n unsafe.Pointer) uint32

//go:wasmimport env proxy_get_buffer_status
func proxy_get_buffer_status(t uint32, length, flags unsafe.Pointer) uint32

//go:wasmimport env proxy_set_buffer_bytes
func proxy_set_buffer_bytes(t, start, size uint32, data unsafe.Pointer, n uint32) uint32

//go:wasmimport env proxy_get_header_map_pairs
func proxy_get_header_map_pairs(t uint32, ptr, n unsafe.Pointer) uint32

//go:wasmimport env proxy_set_header_map_pairs
func proxy_set_header_map_pairs(t uint32, data unsafe.Pointer, n uint32) uint32

//go:wasmimport env proxy_get_header_map_value
func proxy_get_header_map_value(t uint32, key unsafe.Pointer, keyN uint32, ptr, n unsafe.Pointer) uint32

//go:wasmimport env proxy_add_header_map_value
func proxy_add_header_map_value(t uint32, key unsafe.Pointer, keyN uint32, val unsafe.Pointer, valN uint32) uint32

//go:wasmimport env proxy_replace_header_map_value
func proxy_replace_header_map_value(t uint32, key unsafe.Pointer, keyN uint32, val unsafe.Pointer, valN uint32) uint32

//go:wasmimport env proxy_remove_header_map_value
func proxy_remove_header_map_value(t uint32, key unsafe.Pointer, keyN uint32) uint32

//go:wasmimport env proxy_continue_stream
func proxy_continue_stream(t uint32) uint32

//go:wasmimport env proxy_close_stream
func proxy_close_stream(t uint32) uint32

//go:wasmimport env proxy_get_status
func proxy_get_status(code, msg, msgN unsafe.Pointer) uint32

//go:wasmimport env proxy_send_local_response
func proxy_send_local_response(status uint32, details unsafe.Pointer, detailsN uint32,
	body unsafe.Pointer, bodyN uint32, headers unsafe.Pointer, headersN uint32, grpc uint32) uint32

//go:wasmimport env proxy_http_call
func proxy_http_call(cluster unsafe.Pointer, clusterN uint32, headers unsafe.Pointer, headersN uint32,
	body unsafe.Pointer, bodyN uint32, trailers unsafe.Pointer, trailersN uint32, timeout uint32, id unsafe.Pointer) uint32

//go:wasmimport env proxy_get_shared_data
func proxy_get_shared_data(key unsafe.Pointer, keyN uint32, ptr, n, cas unsafe.Pointer) uint32

//go:wasmimport env proxy_set_shared_data
func proxy_set_shared_data(key unsafe.Pointer, keyN uint32, val unsafe.Pointer, valN uint32, cas uint32) uint32

//go:wasmimport env proxy_register_shared_queue
func proxy_register_shared_queue(name unsafe.Pointer, nameN uint32, id unsafe.Pointer) uint32

//go:wasmimport env proxy_resolve_shared_queue
func proxy_resolve_shared_queue(vm unsafe.Pointer, vmN uint32, name unsafe.Pointer, nameN uint32, id unsafe.Pointer) uint32

//go:wasmimport env proxy_enqueue_shared_queue
func proxy_enqueue_shared_queue(id uint32, val unsafe.Pointer, valN uint32) uint32

//go:wasmimport env proxy_dequeue_shared_queue
func proxy_dequeue_shared_queue(id uint32, ptr, n unsafe.Pointer) uint32

//go:wasmimport env proxy_define_metric
func proxy_define_metric(kind uint32, name unsafe.Pointer, nameN uint32, id unsafe.Pointer) uint32

//go:wasmimport env proxy_increment_metric
func proxy_increment_metric(id uint32, delta int64) uint32

//go:wasmimport env proxy_record_metric
func proxy_record_metric(id uint32, value uint64) uint32

//go:wasmimport env proxy_get_metric
func proxy_get_metric(id uint32, value unsafe.Pointer) uint32

//go:wasmimport env proxy_get_property
func proxy_get_property(path unsafe.Pointer, pathN uint32, ptr, n unsafe.Pointer) uint32

//go:wasmimport env proxy_set_property
func proxy_set_property(path unsafe.Pointer, pathN uint32, val unsafe.Pointer, valN uint32) uint32

//go:wasmimport env proxy_call_foreign_function
func proxy_call_foreign_function(name unsafe.Pointer, nameN uint32, args unsafe.Pointer, argsN uint32, ptr, n unsafe.Pointer) uint32
