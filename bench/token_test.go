package bench

import (
	"context"
	"testing"
	"time"

	"herald/token"
)

// A bench device signs a token once and keeps it until 10 minutes before
// its hour is up, then signs a new one: reconnects cost no signing, and a
// long run never offers an expired token.
func TestTokenCacheKeepsThenRenews(t *testing.T) {
	now := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	tc := &tokenCache{secret: []byte("s3cret"), app: "demo", user: "u7", now: func() time.Time { return now }}
	ctx := context.Background()

	first, err := tc.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if user, err := token.Verify([]byte(first), "demo", benchDevice, [][]byte{[]byte("s3cret")}); err != nil || user != "u7" {
		t.Fatalf("token does not verify for u7: user %q, %v", user, err)
	}
	signedUntil := tc.until
	if want := now.Add(tokenRenew); !signedUntil.Equal(want) {
		t.Fatalf("kept until %v, want %v", signedUntil, want)
	}

	now = now.Add(tokenRenew - time.Minute)
	again, err := tc.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again != first || !tc.until.Equal(signedUntil) {
		t.Fatal("signed again before the renewal time")
	}

	now = now.Add(2 * time.Minute)
	if _, err := tc.get(ctx); err != nil {
		t.Fatal(err)
	}
	if want := now.Add(tokenRenew); !tc.until.Equal(want) {
		t.Fatalf("not renewed after %v: kept until %v, want %v", tokenRenew, tc.until, want)
	}
	if tokenRenew >= tokenTTL {
		t.Fatalf("renewal (%v) must come before expiry (%v)", tokenRenew, tokenTTL)
	}
}
