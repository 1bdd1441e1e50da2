package e2e

import "github.com/valyala/fasthttp"

type (
	fasthttpRequest  = fasthttp.Request
	fasthttpResponse = fasthttp.Response
)
