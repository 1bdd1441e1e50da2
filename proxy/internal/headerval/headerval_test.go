package headerval

import "testing"

func TestEqualFold(t *testing.T) {
	for _, tc := range []struct {
		b, s string
		want bool
	}{
		{"Content-Type", "content-type", true}, {"CONTENT-TYPE", "content-type", true},
		{"content-type", "content-type", true}, {"content-typ", "content-type", false},
		{"content_type", "content-type", false}, {"", "", true},
	} {
		if got := EqualFold([]byte(tc.b), tc.s); got != tc.want {
			t.Errorf("EqualFold(%q, %q) = %v", tc.b, tc.s, got)
		}
	}
}

func TestCommonDoesNotAllocate(t *testing.T) {
	v := []byte("application/json")
	if s, ok := Common(v); !ok || s != "application/json" {
		t.Fatalf("Common(%q) = %q, %v", v, s, ok)
	}
	if _, ok := Common([]byte("application/x-unknown")); ok {
		t.Fatal("an uncommon value was found")
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = Common(v) }); n != 0 {
		t.Fatalf("Common allocates %v times", n)
	}
}
