package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/herd-iot/herd/internal/sim"
)

// The fleet child process: this program re-executed with roleEnv=fleet
// and fleetEnv naming its configuration file. It obeys one command per
// line on stdin ("connect", "disconnect", "quit") and answers each with a
// JSON reply on stdout, so the hub process can time phases and measure its
// own memory without the devices in it.
const (
	roleEnv  = "HERD_BENCH_ROLE"
	fleetEnv = "HERD_BENCH_FLEET"
)

// fleetSpec is the child's configuration.
type fleetSpec struct {
	Host        string         `json:"host"`
	Addr        string         `json:"addr"`
	Concurrency int            `json:"concurrency"`
	Devices     []sim.Identity `json:"devices"`
	PeerTopics  bool           `json:"peerTopics,omitempty"` // sim.Config.PeerTopics
}

// reply is the child's answer to one command.
type reply struct {
	Connected int64   `json:"connected"`
	Seconds   float64 `json:"seconds"`
	Err       string  `json:"err,omitempty"`
}

// fleetMain runs the child.
func fleetMain(stdin io.Reader, stdout io.Writer) error {
	b, err := os.ReadFile(os.Getenv(fleetEnv))
	if err != nil {
		return err
	}
	var spec fleetSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		return err
	}
	f := sim.New(sim.Config{Host: spec.Host, Addr: spec.Addr, Devices: spec.Devices, Concurrency: spec.Concurrency, PeerTopics: spec.PeerTopics})
	defer f.Disconnect()
	out := json.NewEncoder(stdout)
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		start := time.Now()
		var r reply
		switch strings.TrimSpace(sc.Text()) {
		case "connect":
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			if err := f.Connect(ctx); err != nil {
				r.Err = err.Error()
			}
			cancel()
		case "disconnect":
			f.Disconnect()
		case "quit":
			f.Disconnect()
			return out.Encode(reply{})
		default:
			r.Err = fmt.Sprintf("unknown command %q", sc.Text())
		}
		r.Seconds = time.Since(start).Seconds()
		r.Connected = f.Stats().Connected
		if err := out.Encode(r); err != nil {
			return err
		}
	}
	return sc.Err()
}

// fleetProc is the child as the hub process drives it.
type fleetProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *json.Decoder
}

// startFleet starts a child that simulates devices against a plain MQTT
// address.
func startFleet(dir string, spec fleetSpec) (*fleetProc, error) {
	cmd, in, out, err := startChild(filepath.Join(dir, "fleet.json"), "fleet", fleetEnv, spec)
	if err != nil {
		return nil, err
	}
	return &fleetProc{cmd: cmd, in: in, out: out}, nil
}

// startChild writes spec to path as JSON and starts this program again in
// role (roleEnv), with specEnv naming the file; the child reads commands
// on in and answers on out.
func startChild(path, role, specEnv string, spec any) (*exec.Cmd, io.WriteCloser, *json.Decoder, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, nil, nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), roleEnv+"="+role, specEnv+"="+path)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, err
	}
	return cmd, in, json.NewDecoder(stdout), nil
}

func (f *fleetProc) do(command string) (reply, error) {
	if _, err := fmt.Fprintln(f.in, command); err != nil {
		return reply{}, err
	}
	var r reply
	if err := f.out.Decode(&r); err != nil {
		return r, fmt.Errorf("fleet %s: %w", command, err)
	}
	if r.Err != "" {
		return r, fmt.Errorf("fleet %s: %s", command, r.Err)
	}
	return r, nil
}

// close ends the child (gracefully if it answers, else killed).
func (f *fleetProc) close() {
	done := make(chan struct{})
	go func() {
		_, _ = f.do("quit")
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = f.cmd.Process.Kill()
	}
	f.in.Close()
	_ = f.cmd.Wait()
}
