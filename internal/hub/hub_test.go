package hub_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
	"github.com/herd-iot/herd/internal/certs"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/store"
	"github.com/herd-iot/herd/sas"
)

// TestOwnCertificate serves the user's certificate instead of generating a
// CA in the data folder.
func TestOwnCertificate(t *testing.T) {
	own := t.TempDir()
	if _, err := certs.Local(own, "own.example"); err != nil {
		t.Fatal(err)
	}
	h := hubtest.Start(t, hubtest.WithConfig(func(c *hub.Config) {
		c.TLSCert = filepath.Join(own, "server.pem")
		c.TLSKey = filepath.Join(own, "server-key.pem")
	}))
	if h.CAFile() != "" {
		t.Errorf("CAFile = %q with the user's own certificate", h.CAFile())
	}
	if _, err := os.Stat(filepath.Join(h.Dir, certs.CAFile)); !os.IsNotExist(err) {
		t.Errorf("a CA was generated although a certificate was given: %v", err)
	}
	conn, err := tls.Dial("tcp", h.HTTPSAddr().String(), &tls.Config{InsecureSkipVerify: true, ServerName: "own.example"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	if leaf.VerifyHostname("own.example") != nil {
		t.Errorf("served certificate is not the user's: %v", leaf.DNSNames)
	}
	if conn.ConnectionState().Version < tls.VersionTLS12 {
		t.Error("TLS older than 1.2")
	}
}

func TestValidate(t *testing.T) {
	base := hub.Default()
	for name, mut := range map[string]func(*hub.Config){
		"store":           func(c *hub.Config) { c.Store = nil },
		"data":            func(c *hub.Config) { c.DataDir = "" },
		"hostname":        func(c *hub.Config) { c.Hostname = "" },
		"tls-key":         func(c *hub.Config) { c.TLSCert = "x.pem" },
		"max-connections": func(c *hub.Config) { c.MaxConnections = -1 },
	} {
		c := base
		st, err := store.Open(context.Background(), "", t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		c.Store = st
		mut(&c)
		if _, err := hub.New(context.Background(), c); err == nil {
			t.Errorf("%s: invalid config accepted", name)
		}
	}
}

// TestModuleOverMQTT: a module connects with its own connection string
// (Go device SDK, ModuleId=…), reports to its module twin, gets desired
// pushes and direct methods addressed to the module, and is disconnected
// when its device is deleted.
func TestModuleOverMQTT(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	if _, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: "gw"}); err != nil {
		t.Fatal(err)
	}
	m, err := h.Service.CreateModule(ctx, herd.Module{DeviceID: "gw", ModuleID: "cam"})
	if err != nil {
		t.Fatal(err)
	}
	cs := sas.ConnectionString{HostName: "localhost", DeviceID: "gw", ModuleID: "cam", SharedAccessKey: m.Authentication.SymmetricKey.PrimaryKey}
	c, err := device.New(cs.String(), device.WithCA(h.CA), device.WithAddress(h.MQTTAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	desired := make(chan map[string]any, 4)
	c.OnDesiredChange(func(patch map[string]any, _ int64) { desired <- patch })
	c.OnMethod("zoom", func(_ context.Context, p json.RawMessage) (int, any) {
		return 200, map[string]any{"module": "cam", "got": p}
	})
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReportProperties(ctx, map[string]any{"lens": "wide"}); err != nil {
		t.Fatal(err)
	}
	mt, err := h.Service.GetModuleTwin(ctx, "gw", "cam")
	if err != nil || mt.Properties.Reported["lens"] != "wide" {
		t.Fatalf("module twin: %+v %v", mt, err)
	}
	if dt, _ := h.Service.GetTwin(ctx, "gw"); dt.Properties.Reported["lens"] != nil {
		t.Error("the module's report reached the device twin")
	}
	if _, err := h.Service.UpdateModuleTwin(ctx, "gw", "cam", herd.TwinPatch{Properties: &herd.PatchProperties{Desired: map[string]any{"fps": 25}}}, "*"); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-desired:
		if fmt.Sprint(p["fps"]) != "25" {
			t.Errorf("desired push %v", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no desired push to the module")
	}
	res, err := h.Service.InvokeModuleMethod(ctx, "gw", "cam", herd.MethodRequest{MethodName: "zoom", Payload: json.RawMessage(`2`), ConnectTimeoutInSeconds: 10})
	if err != nil || res.Status != 200 || string(res.Payload) != `{"got":2,"module":"cam"}` {
		t.Fatalf("module method: %+v %v", res, err)
	}
	if _, err := h.Service.InvokeMethod(ctx, "gw", herd.MethodRequest{MethodName: "zoom"}); !herd.IsCode(err, herd.ErrDeviceNotOnline) {
		t.Errorf("the device itself is not connected: %v", err)
	}
	if _, err := h.Service.InvokeModuleMethod(ctx, "gw", "nope", herd.MethodRequest{MethodName: "zoom"}); !herd.IsCode(err, herd.ErrModuleNotFound) {
		t.Errorf("an unknown module: %v", err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool {
		got, err := h.Service.GetModule(ctx, "gw", "cam")
		return err == nil && got.ConnectionState == herd.Connected
	}, "the module shows Connected")
	if err := h.Service.DeleteDevice(ctx, "gw", ""); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, func() bool { return h.Bus.Connected() == 0 }, "the module of the deleted device is disconnected")
}

// TestShutdownDrains: a hub that stops (SIGTERM) stops taking device
// connections at once, but a direct method in flight is still answered:
// its device is closed only once the REST request is done.
func TestShutdownDrains(t *testing.T) {
	h := hubtest.Start(t)
	ctx := context.Background()
	d, err := h.Service.CreateDevice(ctx, herd.Device{DeviceID: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	cs := sas.ConnectionString{HostName: "localhost", DeviceID: "slow", SharedAccessKey: d.Authentication.SymmetricKey.PrimaryKey}
	c, err := device.New(cs.String(), device.WithCA(h.CA), device.WithAddress(h.MQTTAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	called, release := make(chan struct{}), make(chan struct{})
	c.OnMethod("work", func(context.Context, json.RawMessage) (int, any) {
		close(called)
		<-release
		return 200, "done"
	})
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	answered := make(chan error, 1)
	go func() {
		res, err := h.Service.InvokeMethod(ctx, "slow", herd.MethodRequest{MethodName: "work", ResponseTimeoutInSeconds: 30})
		if err == nil && (res.Status != 200 || string(res.Payload) != `"done"`) {
			err = fmt.Errorf("answer %d %s", res.Status, res.Payload)
		}
		answered <- err
	}()
	<-called
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		h.Stop()
	}()
	hubtest.Eventually(t, 10*time.Second, func() bool {
		conn, err := tls.Dial("tcp", h.MQTTAddr, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			conn.Close()
		}
		return err != nil
	}, "the stopping hub still takes device connections")
	select {
	case <-stopped:
		t.Fatal("the hub stopped with a direct method in flight")
	case err := <-answered:
		t.Fatalf("the call in flight ended before its device answered: %v", err)
	default:
	}
	close(release)
	if err := <-answered; err != nil {
		t.Errorf("the call in flight at the stop: %v", err)
	}
	<-stopped
}
