package device_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/device"
)

// A device that answers a direct method, follows its desired properties,
// reports its state and sends telemetry — the seed tutorial's simulated
// device. The connection string is the one `herd device create` prints;
// ca.pem is in the hub's data folder.
func Example() {
	connectionString := "HostName=localhost;DeviceId=myDevice;SharedAccessKey=…"
	c, err := device.New(connectionString,
		device.WithCAFile("herd-data/ca.pem"),
		device.WithAddress("localhost:8883"))
	if err != nil {
		log.Fatal(err)
	}
	c.OnMethod("lockDoor", func(ctx context.Context, payload json.RawMessage) (int, any) {
		fmt.Println("locking the door:", string(payload))
		return 200, map[string]string{"result": "door locked"}
	})
	c.OnDesiredChange(func(patch map[string]any, version int64) {
		fmt.Println("desired change", version, patch)
	})
	ctx := context.Background()
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ReportProperties(ctx, map[string]any{"firmware": "1.0.0"}); err != nil {
		log.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		body := fmt.Sprintf(`{"temperature":%d}`, 20+i)
		if err := c.SendEvent(ctx, []byte(body), map[string]string{"$.ct": "application/json", "$.ce": "utf-8"}); err != nil {
			log.Print(err)
		}
		time.Sleep(time.Second)
	}
}

// Connecting over MQTT on secure WebSocket, port 443 of the hub, for
// networks that only let HTTPS out.
func ExampleWithTransport() {
	c, err := device.New("HostName=localhost;DeviceId=myDevice;SharedAccessKey=…",
		device.WithTransport(device.WebSocket), device.WithCAFile("herd-data/ca.pem"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}

// Reading the twin once connected.
func ExampleClient_Twin() {
	var c *device.Client // connected as in Example
	t, err := c.Twin(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("desired version", t.DesiredVersion, "interval", t.Desired["interval"])
}

// Following the connection: a drop, the attempts to reconnect (with their
// errors) and the reconnect, or a token renewal, and Close at the end.
func ExampleClient_OnConnectionState() {
	c, err := device.New("HostName=localhost;DeviceId=myDevice;SharedAccessKey=…",
		device.WithCAFile("herd-data/ca.pem"))
	if err != nil {
		log.Fatal(err)
	}
	c.OnConnectionState(func(s device.ConnectionState, err error) {
		switch {
		case s == device.Reconnecting && herd.IsCode(err, herd.ErrUnauthorized):
			log.Print("the hub refuses this device's key; was it disabled or rotated?")
		case errors.Is(err, device.ErrTokenRenewal), errors.Is(err, device.ErrClosed):
		default:
			log.Print("hub connection: ", s, " ", err)
		}
	})
	if err := c.Connect(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}

// A refused twin request is a *herd.Error, as in the service SDK.
func ExampleClient_ReportProperties() {
	var c *device.Client // connected as in Example
	_, err := c.ReportProperties(context.Background(), map[string]any{"bad key": 1})
	var he *herd.Error
	if errors.As(err, &he) && he.Code == herd.ErrArgumentInvalid {
		fmt.Println("refused with status", he.Status, ":", he.Message)
	}
}
