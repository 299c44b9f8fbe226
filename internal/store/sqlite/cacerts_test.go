package sqlite_test

import (
	"testing"

	"github.com/herd-iot/herd/internal/certauth"
	"github.com/herd-iot/herd/internal/store/storetest"
)

func TestCACertificateConformance(t *testing.T) {
	storetest.RunCACertificates(t, func(t *testing.T) certauth.Store { return openDB(t) })
}
