package token

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestVerify(t *testing.T) {
	secret := []byte("demo-secret")
	good, err := Sign(secret, "demo", "alice", "d1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	anyDevice, _ := Sign(secret, "demo", "bob", "", time.Minute)
	expired, _ := Sign(secret, "demo", "alice", "d1", -time.Minute)
	otherApp, _ := Sign(secret, "other", "alice", "d1", time.Minute)
	badSig, _ := Sign([]byte("wrong"), "demo", "alice", "d1", time.Minute)
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, Claims{App: "demo", RegisteredClaims: jwt.RegisteredClaims{Subject: "alice"}}).SignedString(secret)
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, Claims{App: "demo", RegisteredClaims: jwt.RegisteredClaims{Subject: "alice", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	noSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, Claims{App: "demo", RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}}).SignedString(secret)

	f := func(name, tok, device string, secrets [][]byte, wantUser string, wantErr error) {
		t.Helper()
		user, err := Verify([]byte(tok), "demo", device, secrets)
		if !errors.Is(err, wantErr) || user != wantUser {
			t.Errorf("%s: got (%q, %v) want (%q, %v)", name, user, err, wantUser, wantErr)
		}
		if err != nil && tok != "" && strings.Contains(err.Error(), tok) {
			t.Errorf("%s: error message contains the token", name)
		}
	}
	f("good", good, "d1", [][]byte{secret}, "alice", nil)
	f("rotated: old secret first", good, "d1", [][]byte{[]byte("old"), secret}, "alice", nil)
	f("no device claim", anyDevice, "phone", [][]byte{secret}, "bob", nil)
	f("missing", "", "d1", [][]byte{secret}, "", ErrMissing)
	f("expired", expired, "d1", [][]byte{secret}, "", ErrExpired)
	f("no exp", noExp, "d1", [][]byte{secret}, "", ErrExpired)
	f("other app", otherApp, "d1", [][]byte{secret}, "", ErrAppMismatch)
	otherAppSecret, _ := Sign([]byte("other-secret"), "other", "alice", "d1", time.Minute)
	f("other app, its own secret", otherAppSecret, "d1", [][]byte{secret}, "", ErrAppMismatch)
	f("other device", good, "d2", [][]byte{secret}, "", ErrDeviceMismatch)
	f("bad signature", badSig, "d1", [][]byte{secret}, "", ErrInvalid)
	f("alg none", none, "d1", [][]byte{secret}, "", ErrInvalid)
	f("garbage", "not.a.jwt", "d1", [][]byte{secret}, "", ErrInvalid)
	f("no sub", noSub, "d1", [][]byte{secret}, "", ErrInvalid)
	f("no secrets", good, "d1", nil, "", ErrInvalid)
}

// Tokens arrive from devices: no bytes may panic Verify, every failure is
// one of its declared errors (whose texts never carry the token), and
// only a token signed with one of the secrets yields a user.
func FuzzVerify(f *testing.F) {
	secret := []byte("demo-secret")
	good, _ := Sign(secret, "demo", "alice", "d1", time.Hour)
	f.Add([]byte(good))
	f.Add([]byte("a.b.c"))
	f.Add([]byte(""))
	f.Add([]byte(good[:len(good)-3] + "AAA"))
	f.Fuzz(func(t *testing.T, tok []byte) {
		user, err := Verify(tok, "demo", "d1", [][]byte{secret})
		if err != nil {
			if user != "" {
				t.Fatalf("user %q with error %v", user, err)
			}
			known := false
			for _, e := range []error{ErrMissing, ErrExpired, ErrInvalid, ErrAppMismatch, ErrDeviceMismatch} {
				known = known || errors.Is(err, e)
			}
			if !known {
				t.Fatalf("undeclared error %v", err)
			}
			if len(tok) >= 8 && strings.Contains(err.Error(), string(tok)) {
				t.Fatalf("error %q carries the token", err)
			}
			return
		}
		// Accepted: the same bytes fail under another secret.
		if user == "" {
			t.Fatal("accepted without a user")
		}
		if _, err := Verify(tok, "demo", "d1", [][]byte{[]byte("another-secret")}); err == nil {
			t.Fatalf("token %q verifies under any secret", tok)
		}
	})
}
