package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/service"
)

func methodCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := group(&cobra.Command{
		Use:   "method",
		Short: "Invoke direct methods on devices",
	})
	cf.register(cmd)

	var payload, module string
	var timeout, connectTimeout int
	invokeCmd := &cobra.Command{
		Use:   "invoke ID NAME",
		Short: "Call a direct method on a device and print its answer",
		Example: `  herd method invoke dev1 reboot
  herd method invoke dev1 setInterval --payload '{"seconds":5}' --timeout 10 --connect-timeout 30`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !json.Valid([]byte(payload)) {
				return fmt.Errorf("--payload: not valid JSON: %s", payload)
			}
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			req := herd.MethodRequest{
				MethodName: args[1], Payload: json.RawMessage(payload),
				ResponseTimeoutInSeconds: timeout, ConnectTimeoutInSeconds: connectTimeout,
			}
			var res *herd.MethodResult
			if module != "" {
				res, err = c.InvokeModuleMethod(cmd.Context(), args[0], module, req)
			} else {
				res, err = c.InvokeMethod(cmd.Context(), args[0], req)
			}
			if err != nil {
				return err
			}
			if cf.output == "json" {
				return printJSON(e, res)
			}
			fmt.Fprintf(e.stdout, "status: %d\npayload: %s\n", res.Status, res.Payload)
			return nil
		},
	}
	f := invokeCmd.Flags()
	f.StringVar(&payload, "payload", "null", "the method's payload, as JSON")
	f.IntVar(&timeout, "timeout", 30, "seconds to wait for the device's answer (5 to 300)")
	f.IntVar(&connectTimeout, "connect-timeout", 0, "seconds to wait for an offline device to connect (0 to 300)")
	f.StringVar(&module, "module", "", "call the method on this module of the device")
	cmd.AddCommand(invokeCmd)
	return cmd
}

func monitorCommand(e *env) *cobra.Command {
	var cf clientFlags
	var deviceID string
	var props bool
	cmd := &cobra.Command{
		Use:   "monitor",
		Short: "Print device-to-cloud messages as the hub receives them (like az iot hub monitor-events)",
		Example: `  herd monitor
  herd monitor --device dev1 --properties
  herd monitor -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stderr, "Monitoring device-to-cloud messages; press Ctrl+C to stop.")
			return c.MonitorEvents(cmd.Context(), deviceID, service.EventHandler{
				Event: func(ev *herd.Event) error {
					if cf.output == "json" {
						return json.NewEncoder(e.stdout).Encode(ev)
					}
					return printEvent(e, ev, props)
				},
				Dropped: func(n int64) {
					fmt.Fprintf(e.stderr, "(%d messages dropped: this monitor fell behind)\n", n)
				},
			})
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&deviceID, "device", "", "only this device's messages")
	cmd.Flags().BoolVar(&props, "properties", false, "also print system and application properties")
	return cmd
}

// printEvent writes one message: time, device (device/module for a
// module's) and body (as JSON when it is JSON, else as text).
func printEvent(e *env, ev *herd.Event, props bool) error {
	body := string(ev.Body)
	if !json.Valid(ev.Body) {
		b, _ := json.Marshal(body)
		body = string(b)
	}
	from := ev.DeviceID
	if ev.ModuleID != "" {
		from = herd.ModuleIdentity(ev.DeviceID, ev.ModuleID)
	}
	fmt.Fprintf(e.stdout, "%s %s %s\n", ev.EnqueuedTime.Time.Format(time.RFC3339Nano), from, body)
	if props {
		sys, _ := json.Marshal(ev.SystemProperties)
		app, _ := json.Marshal(ev.Properties)
		fmt.Fprintf(e.stdout, "    system: %s\n    application: %s\n", sys, app)
	}
	return nil
}
