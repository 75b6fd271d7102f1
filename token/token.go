// Package token signs and verifies device tokens: HS256 JWTs signed with an
// app's device secret, carrying the app, the user (sub), the device and an
// expiry. App backends mint them; gateways verify them on CONNECT.
package token

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are a device token's claims.
type Claims struct {
	App    string `json:"app"`
	Device string `json:"device,omitempty"` // when set, CONNECT must name this device
	jwt.RegisteredClaims
}

// Errors returned by Verify. Their messages never contain the token.
var (
	// ErrMissing means no token was given.
	ErrMissing = errors.New("token missing")
	// ErrExpired means the token's exp has passed (or it has none).
	ErrExpired = errors.New("token expired")
	// ErrInvalid means the token does not parse, is not HS256, or its
	// signature matches none of the app's secrets.
	ErrInvalid = errors.New("token invalid")
	// ErrAppMismatch means the token was issued for another app.
	ErrAppMismatch = errors.New("token issued for another app")
	// ErrDeviceMismatch means the token names another device.
	ErrDeviceMismatch = errors.New("token issued for another device")
)

// Sign mints a token for app/user/device valid for ttl.
func Sign(secret []byte, app, user, device string, ttl time.Duration) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("token: empty secret")
	}
	now := time.Now()
	c := Claims{App: app, Device: device, RegisteredClaims: jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("token: cannot sign: %w", err)
	}
	return s, nil
}

var parser = jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())

// Verify checks tok against each of the app's secrets (several during a
// rotation) and that it was issued for app and, if it names one, for device.
// It returns the token's user.
func Verify(tok []byte, app, device string, secrets [][]byte) (user string, err error) {
	if len(tok) == 0 {
		return "", ErrMissing
	}
	var lastErr error = ErrInvalid
	for _, secret := range secrets {
		var c Claims
		_, err := parser.ParseWithClaims(string(tok), &c, func(*jwt.Token) (any, error) { return secret, nil })
		switch {
		case err == nil:
			if c.App != app {
				return "", ErrAppMismatch
			}
			if c.Device != "" && c.Device != device {
				return "", ErrDeviceMismatch
			}
			if c.Subject == "" {
				return "", ErrInvalid
			}
			return c.Subject, nil
		case errors.Is(err, jwt.ErrTokenExpired) || errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
			// The signature was good (claims are validated after it): report expiry.
			return "", ErrExpired
		case errors.Is(err, jwt.ErrTokenSignatureInvalid):
			lastErr = ErrInvalid
		default:
			return "", ErrInvalid
		}
	}
	// No secret of this app signed it: say so plainly when it names another app.
	var c Claims
	if _, _, err := parser.ParseUnverified(string(tok), &c); err == nil && c.App != app {
		return "", ErrAppMismatch
	}
	return "", lastErr
}
