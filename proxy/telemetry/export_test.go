package telemetry

// Names the external tests of the package use.
var (
	WriteTestPKI = writeTestPKI
	TestClientID = testClientID
)
