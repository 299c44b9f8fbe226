package registry

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
)

// MaxDeviceIDLength is the longest device id Azure allows.
const MaxDeviceIDLength = 128

// ValidateDeviceID checks a device id against Azure's rules: 1 to 128
// characters, ASCII letters and digits and - . + % _ # * ? ! ( ) , = @ $ '
// (and : ; which the REST API's models also allow).
func ValidateDeviceID(id string) error {
	if id == "" {
		return herd.Errorf(herd.ErrArgumentInvalid, "the device id is empty")
	}
	if len(id) > MaxDeviceIDLength {
		return herd.Errorf(herd.ErrArgumentInvalid, "the device id is %d characters long; the limit is %d", len(id), MaxDeviceIDLength)
	}
	for i := 0; i < len(id); i++ {
		if !idChar(id[i]) {
			return herd.Errorf(herd.ErrArgumentInvalid,
				"the device id %q contains %q; ids may use ASCII letters, digits and - . + %% _ # * ? ! ( ) , = @ $ ' : ;", id, id[i])
		}
	}
	return nil
}

func idChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '+', '%', '_', '#', '*', '?', '!', '(', ')', ',', '=', '@', '$', '\'', ':', ';':
		return true
	}
	return false
}

// keyOrNew returns key, or a new random key if key is empty.
func keyOrNew(key string) string {
	if key != "" {
		return key
	}
	return auth.NewKey()
}

// validateKey checks a symmetric key: base64 of 16 to 64 bytes; "" passes
// (the caller fills it in).
func validateKey(name, key string) error {
	if key == "" {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return herd.Errorf(herd.ErrArgumentInvalid, "the %s is not valid base64", name)
	}
	if len(b) < 16 || len(b) > 64 {
		return herd.Errorf(herd.ErrArgumentInvalid, "the %s must decode to 16 to 64 bytes, not %d", name, len(b))
	}
	return nil
}

// normalize validates a device as a client sent it and fills defaults:
// status enabled and authentication type sas. Empty sas keys are generated
// when generate is set and left empty otherwise (an update keeps the
// current keys). It leaves hub-managed fields alone.
func normalize(d *herd.Device, generate bool) error {
	if err := ValidateDeviceID(d.DeviceID); err != nil {
		return err
	}
	switch d.Status {
	case "":
		d.Status = herd.DeviceEnabled
	case herd.DeviceEnabled, herd.DeviceDisabled:
	default:
		return herd.Errorf(herd.ErrArgumentInvalid, "status %q is not \"enabled\" or \"disabled\"", d.Status)
	}
	if d.StatusReason != nil && len(*d.StatusReason) > 128 {
		return herd.Errorf(herd.ErrArgumentInvalid, "statusReason is longer than 128 characters")
	}
	return normalizeAuth(&d.Authentication, generate)
}

// normalizeAuth checks a device's authentication (§3.7) and fills its
// type and, when generate is set, empty sas keys. sas takes keys and no
// thumbprints; selfSigned a primary thumbprint (and optionally a
// secondary: hex SHA-1 or SHA-256 of the device certificate, either case)
// and no keys; certificateAuthority and none neither. A null or empty
// thumbprint or key counts as absent.
func normalizeAuth(a *herd.Authentication, generate bool) error {
	primary, secondary := deref(a.X509Thumbprint.PrimaryThumbprint), deref(a.X509Thumbprint.SecondaryThumbprint)
	hasThumb := primary != "" || secondary != ""
	hasKey := a.SymmetricKey.PrimaryKey != "" || a.SymmetricKey.SecondaryKey != ""
	if a.Type == "" {
		if hasThumb {
			a.Type = herd.AuthSelfSigned
		} else {
			a.Type = herd.AuthSAS
		}
	}
	switch a.Type {
	case herd.AuthSAS:
		if hasThumb {
			return herd.Errorf(herd.ErrArgumentInvalid, "sas authentication takes symmetric keys, not an x509Thumbprint; use type selfSigned for a certificate")
		}
		if generate {
			a.SymmetricKey.PrimaryKey = keyOrNew(a.SymmetricKey.PrimaryKey)
			a.SymmetricKey.SecondaryKey = keyOrNew(a.SymmetricKey.SecondaryKey)
		}
		if err := validateKey("primary key", a.SymmetricKey.PrimaryKey); err != nil {
			return err
		}
		if err := validateKey("secondary key", a.SymmetricKey.SecondaryKey); err != nil {
			return err
		}
		a.X509Thumbprint = herd.X509Thumbprint{}
	case herd.AuthSelfSigned:
		if hasKey {
			return herd.Errorf(herd.ErrArgumentInvalid, "selfSigned authentication takes an x509Thumbprint, not symmetric keys")
		}
		if primary == "" {
			return herd.Errorf(herd.ErrArgumentInvalid, "selfSigned authentication needs a primary thumbprint")
		}
		if err := validateThumbprint("primary thumbprint", primary); err != nil {
			return err
		}
		if err := validateThumbprint("secondary thumbprint", secondary); err != nil {
			return err
		}
		a.SymmetricKey = herd.SymmetricKey{}
		a.X509Thumbprint = herd.X509Thumbprint{PrimaryThumbprint: &primary}
		if secondary != "" {
			a.X509Thumbprint.SecondaryThumbprint = &secondary
		}
	case herd.AuthCertificateAuthority, herd.AuthNone:
		if hasKey || hasThumb {
			return herd.Errorf(herd.ErrArgumentInvalid, "%s authentication takes neither symmetric keys nor an x509Thumbprint", a.Type)
		}
		a.SymmetricKey = herd.SymmetricKey{}
		a.X509Thumbprint = herd.X509Thumbprint{}
	default:
		return herd.Errorf(herd.ErrArgumentInvalid, "authentication type %q is not one of sas, selfSigned, certificateAuthority, none", a.Type)
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// validateThumbprint checks a certificate thumbprint: the hex of a SHA-1
// (40 digits) or SHA-256 (64 digits) digest, in either case; "" passes.
func validateThumbprint(name, t string) error {
	if t == "" {
		return nil
	}
	if len(t) != 40 && len(t) != 64 {
		return herd.Errorf(herd.ErrArgumentInvalid, "the %s must be 40 (SHA-1) or 64 (SHA-256) hex digits, not %d characters", name, len(t))
	}
	if _, err := hex.DecodeString(t); err != nil {
		return herd.Errorf(herd.ErrArgumentInvalid, "the %s %q is not hexadecimal", name, t)
	}
	return nil
}

// ETagString is the identity etag on the wire: base64 of the decimal
// counter, as Azure writes it ("MQ==" for 1).
func ETagString(n int64) string {
	return base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "%d", n))
}
