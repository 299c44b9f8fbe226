package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/herd-iot/herd/bench/measure"
	"github.com/herd-iot/herd/internal/sim"
)

// The peers section measures Herd's gateway against a real peer broker on
// the same machine in the same run: Debian's Mosquitto, started on a free
// loopback port with persistence off, and the same fleet process (the
// devices of sim, over plain MQTT, 64 connects in flight) connected to
// each in turn. For each it measures, in the broker's own process: first
// connects per second, CPU per first connect (the connect burst and a 2 s
// settle, so that Herd's batched connection-state writes count), RSS per
// idle connection, and round trips (a caller sends the device a method
// request, the device answers). Herd's caller is method.Invoke in the
// hub's process, as in the gateway section; Mosquitto's is one MQTT client
// connection in this process.
//
// A plain broker routes by topic, not by connection: the fleet then puts
// sim.PeerTopicPrefix before its $iothub topics (sim.Config.PeerTopics),
// so each device still gets only its own requests.

// peerConnects is how many connects the fleet keeps in flight here.
const peerConnects = 64

// mosquittoHint is what a run without Mosquitto says.
const mosquittoHint = "Debian's mosquitto is not installed: `apt-get install mosquitto` (the harness runs it itself on a loopback port; no service needs to run)"

// brokerFigures is what was measured on one broker.
type brokerFigures struct {
	name       string
	connects   float64       // first connects per second
	cpuPerConn time.Duration // CPU per first connect, broker process
	rssPerConn float64       // KB per idle connection, broker process, as the OS sees it
	liveKB     float64       // the same after a forced garbage collection (Herd only; 0: not measured)
	// Of liveKB (Herd only): mapped file pages (the store's mmap),
	// goroutine stacks, Go heap spans in use.
	fileKB, stackKB, heapKB float64
	rt                      measure.RoundTrips
}

func benchPeers(ctx context.Context, e *bench) error {
	exe, err := findMosquitto()
	if err != nil {
		e.r.add(row{what: "peer broker (Mosquitto) beside Herd", store: "—", scale: "", measured: "not measured: " + mosquittoHint})
		e.logf("peers: %s", mosquittoHint)
		if os.Getenv("CI") == "true" {
			return err
		}
		return nil
	}
	n := e.cfg.gatewayDevices
	m, err := startMosquitto(ctx, exe)
	if err != nil {
		return err
	}
	defer m.stop()
	ids := peerIdentities(n)
	e.logf("peers: %s on %s, %d devices", m.version, m.addr, n)
	mf, err := measurePeer(ctx, e, ids, m)
	m.stop()
	if err != nil {
		return fmt.Errorf("mosquitto: %w", err)
	}
	mf.name = m.version
	peerRows(e, mf, "Mosquitto (persistence off)")
	for _, b := range e.backends {
		hf, err := measureHerdPeer(ctx, e, b, n)
		if err != nil {
			return fmt.Errorf("herd on %s: %w", b.Name(), err)
		}
		peerRows(e, hf, b.Name())
		scale := fmt.Sprintf("%s devices", count(n))
		cpu := "— (Mosquitto's CPU under the 10 ms clock tick: too few connects)"
		if mf.cpuPerConn > 0 {
			cpu = fmt.Sprintf("%.2f× (%s ÷ %s)", hf.cpuPerConn.Seconds()/mf.cpuPerConn.Seconds(), micros(hf.cpuPerConn), micros(mf.cpuPerConn))
		}
		e.r.ratio(row{what: "hub CPU per first SAS connect ÷ Mosquitto's", store: b.Name(), scale: scale, measured: cpu, target: "≤ 1.0×"})
		e.r.ratio(row{what: fmt.Sprintf("first connects/s at %d in flight ÷ Mosquitto's", peerConnects), store: b.Name(), scale: scale,
			measured: fmt.Sprintf("%.2f (%s/s ÷ %s/s)", hf.connects/mf.connects, count(int(hf.connects)), count(int(mf.connects))),
			target:   "≥ 1.0"})
		e.r.ratio(row{what: "hub RSS per idle connection ÷ Mosquitto's (as the OS sees it)", store: b.Name(), scale: scale,
			measured: fmt.Sprintf("%.2f (%.1f KB ÷ %.1f KB)", hf.rssPerConn/mf.rssPerConn, hf.rssPerConn, mf.rssPerConn),
			target:   "≤ 1.0"})
		e.r.ratio(row{what: fmt.Sprintf("round trips ÷ Mosquitto's (%d in flight; Herd's caller in its process, Mosquitto's over a socket)", e.cfg.inflight), store: b.Name(), scale: scale,
			measured: fmt.Sprintf("%.2f (%s/s ÷ %s/s)", hf.rt.Rate/mf.rt.Rate, count(int(hf.rt.Rate)), count(int(mf.rt.Rate))),
			target:   ""})
	}
	return nil
}

func liveNote(f brokerFigures) string {
	if f.liveKB == 0 {
		return ""
	}
	return fmt.Sprintf(" (%.1f KB after a forced garbage collection: Go heap %.1f KB, goroutine stacks %.1f KB, mapped file pages %.1f KB)",
		f.liveKB, f.heapKB, f.stackKB, f.fileKB)
}

func micros(d time.Duration) string {
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

func peerRows(e *bench, f brokerFigures, store string) {
	scale := fmt.Sprintf("%s devices", count(e.cfg.gatewayDevices))
	what := func(s string) string { return f.name + ": " + s }
	e.r.add(row{what: what(fmt.Sprintf("first connects, plain MQTT, %d in flight (same fleet process)", peerConnects)), store: store, scale: scale,
		measured: fmt.Sprintf("**%s/s**", count(int(f.connects)))})
	e.r.add(row{what: what("CPU per first connect (broker process: the burst and a 2 s settle)"), store: store, scale: scale,
		measured: "**" + micros(f.cpuPerConn) + "**"})
	e.r.add(row{what: what("RSS per idle connection (broker process, as the OS sees it)"), store: store, scale: scale,
		measured: fmt.Sprintf("**%.1f KB**", f.rssPerConn) + liveNote(f)})
	e.r.add(row{what: what(fmt.Sprintf("method round trips (caller → broker → device → caller, %d in flight)", e.cfg.inflight)), store: store, scale: scale,
		measured: fmt.Sprintf("**%s/s**, p50 %s, p99 %s, %d errors", count(int(f.rt.Rate)), seconds(f.rt.P50), seconds(f.rt.P99), f.rt.Errors)})
}

// peerIdentities are the Mosquitto fleet's devices (Mosquitto checks no
// token; the keys only make the fleet do the same work as against Herd).
func peerIdentities(n int) []sim.Identity {
	ids := make([]sim.Identity, n)
	for i := range ids {
		ids[i] = sim.Identity{ID: fmt.Sprintf("peer-%06d", i), Key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}
	}
	return ids
}

// measurePeer measures Mosquitto with the fleet.
func measurePeer(ctx context.Context, e *bench, ids []sim.Identity, m *mosquitto) (brokerFigures, error) {
	dir, err := os.MkdirTemp("", "herd-bench-peers-")
	if err != nil {
		return brokerFigures{}, err
	}
	defer os.RemoveAll(dir)
	var f brokerFigures
	base := measure.ProcRSSKB(m.pid)
	fl, err := startFleet(dir, fleetSpec{Host: "peer.local", Addr: m.addr, Concurrency: peerConnects, Devices: ids, PeerTopics: true})
	if err != nil {
		return f, err
	}
	defer fl.close()
	cpu0, err := measure.CPUTime(m.pid)
	if err != nil {
		return f, err
	}
	rep, err := fl.do("connect")
	if err != nil {
		return f, err
	}
	if rep.Connected != int64(len(ids)) {
		return f, fmt.Errorf("%d of %d devices connected", rep.Connected, len(ids))
	}
	f.connects = float64(len(ids)) / rep.Seconds
	time.Sleep(2 * time.Second)
	cpu1, err := measure.CPUTime(m.pid)
	if err != nil {
		return f, err
	}
	f.cpuPerConn = (cpu1 - cpu0) / time.Duration(len(ids))
	f.rssPerConn = float64(measure.ProcRSSKB(m.pid)-base) / float64(len(ids))

	c, err := dialPeerCaller(ctx, m.addr)
	if err != nil {
		return f, err
	}
	defer c.close()
	e.logf("peers: round trips through Mosquitto for %s with %d in flight", e.cfg.roundTrips, e.cfg.inflight)
	f.rt = measure.RoundTripsOf(ctx, c.call, ids, e.cfg.roundTrips, e.cfg.inflight)
	return f, nil
}

// measureHerdPeer measures Herd (in this process) with the same fleet.
func measureHerdPeer(ctx context.Context, e *bench, b *backend, n int) (brokerFigures, error) {
	f := brokerFigures{name: "Herd"}
	h, err := b.hub(ctx, "peers", "", 0, true)
	if err != nil {
		return f, err
	}
	defer h.stop()
	ids, err := register(ctx, h, "peer-", n)
	if err != nil {
		return f, err
	}
	base := measure.SettledRSS()
	baseMem := measure.MemoryKB()
	heapProfile(b.Name(), "before")
	fl, err := startFleet(h.dir, fleetSpec{Host: h.Hostname(), Addr: h.MQTTPlainAddr().String(), Concurrency: peerConnects, Devices: ids})
	if err != nil {
		return f, err
	}
	defer fl.close()
	self := os.Getpid()
	stopProfile, err := profileConnects()
	if err != nil {
		return f, err
	}
	cpu0, err := measure.CPUTime(self)
	if err != nil {
		stopProfile()
		return f, err
	}
	e.logf("peers: connecting %d devices to Herd (%s), %d in flight", n, b.Name(), peerConnects)
	rep, err := fl.do("connect")
	if err == nil {
		err = waitConnected(ctx, h, int64(n), time.Minute)
	}
	if err != nil {
		stopProfile()
		return f, err
	}
	f.connects = float64(n) / rep.Seconds
	time.Sleep(2 * time.Second)
	cpu1, err := measure.CPUTime(self)
	stopProfile()
	if err != nil {
		return f, err
	}
	f.cpuPerConn = (cpu1 - cpu0) / time.Duration(n)
	// As the OS sees it after the settle, garbage of the burst included;
	// then what a forced collection leaves (the hub sets neither GOGC nor
	// GOMEMLIMIT: Go's defaults).
	f.rssPerConn = float64(measure.RSSKB()-base) / float64(n)
	f.liveKB = float64(measure.SettledRSS()-base) / float64(n)
	mem := measure.MemoryKB()
	f.fileKB = float64(mem.File-baseMem.File) / float64(n)
	f.stackKB = float64(mem.Stacks-baseMem.Stacks) / float64(n)
	f.heapKB = float64(mem.Heap-baseMem.Heap) / float64(n)
	heapProfile(b.Name(), "after")
	e.logf("peers: round trips through Herd for %s with %d in flight", e.cfg.roundTrips, e.cfg.inflight)
	f.rt = measure.MeasureRoundTrips(ctx, h.Methods, ids, e.cfg.roundTrips, e.cfg.inflight)
	return f, nil
}

// peersProfileEnv, if set, names a file where the peers section writes a
// CPU profile of Herd's connect burst and settle (the span its CPU per
// connect is measured over; not with profileEnv, which profiles the whole
// process).
const peersProfileEnv = "HERD_BENCH_CONNECT_PROFILE"

// peersHeapEnv, if set, is the prefix of two heap profiles the peers
// section writes of Herd: PREFIX-<store>-before.pprof before the connects
// and -after.pprof once they settled, each after a forced collection:
// `go tool pprof -sample_index=inuse_space -diff_base BEFORE AFTER` shows
// what the idle connections hold.
const peersHeapEnv = "HERD_BENCH_HEAP_PROFILE"

func heapProfile(store, when string) {
	prefix := os.Getenv(peersHeapEnv)
	if prefix == "" {
		return
	}
	path := fmt.Sprintf("%s-%s-%s.pprof", prefix, strings.ToLower(store), when)
	f, err := os.Create(path)
	if err == nil {
		err = errors.Join(pprof.Lookup("heap").WriteTo(f, 0), f.Close())
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: heap profile %s: %v\n", path, err)
	}
}

func profileConnects() (stop func(), err error) {
	path := os.Getenv(peersProfileEnv)
	if path == "" {
		return func() {}, nil
	}
	return cpuProfile(path)
}

// findMosquitto finds the broker's binary (Debian puts it in /usr/sbin,
// which a user's PATH may lack).
func findMosquitto() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	const debian = "/usr/sbin/mosquitto"
	if _, err := os.Stat(debian); err == nil {
		return debian, nil
	}
	return "", errors.New(mosquittoHint)
}

// mosquitto is a broker this run started.
type mosquitto struct {
	cmd     *exec.Cmd
	exited  chan error // its Wait
	dir     string
	addr    string
	pid     int
	version string
	once    sync.Once
}

// startMosquitto runs the broker on a free loopback port, persistence off,
// no limit on connections or queued messages, Nagle off (as Go's sockets
// are), and waits until it accepts connections.
func startMosquitto(ctx context.Context, exe string) (*mosquitto, error) {
	dir, err := os.MkdirTemp("", "herd-bench-mosquitto-")
	if err != nil {
		return nil, err
	}
	// Readable after the broker drops root for its own user.
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(dir, "mosquitto.conf")
	text := strings.Join([]string{
		"listener " + port + " 127.0.0.1",
		"allow_anonymous true",
		"persistence false",
		"max_connections -1",
		"max_queued_messages 0",
		"set_tcp_nodelay true",
		"log_dest stderr",
		"log_type error",
		"log_type warning",
	}, "\n") + "\n"
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	m := &mosquitto{dir: dir, addr: addr, version: mosquittoVersion(exe), exited: make(chan error, 1)}
	m.cmd = exec.Command(exe, "-c", conf)
	m.cmd.Stderr = os.Stderr
	if err := m.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", exe, err)
	}
	m.pid = m.cmd.Process.Pid
	go func() { m.exited <- m.cmd.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return m, nil
		}
		select {
		case err := <-m.exited:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("mosquitto exited at start: %v", err)
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			m.stop()
			return nil, fmt.Errorf("mosquitto did not listen on %s within 10 s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mosquittoVersion is "Mosquitto 2.0.11", from the binary's help text.
func mosquittoVersion(exe string) string {
	out, _ := exec.Command(exe, "-h").CombinedOutput() // exits 3 after the help
	first, _, _ := strings.Cut(string(out), "\n")
	if _, v, ok := strings.Cut(first, "version "); ok {
		return "Mosquitto " + strings.TrimSpace(v)
	}
	return "Mosquitto"
}

func (m *mosquitto) stop() {
	m.once.Do(func() {
		_ = m.cmd.Process.Kill()
		<-m.exited
		os.RemoveAll(m.dir)
	})
}

// peerCaller sends method requests to devices through a plain broker and
// matches the answers by request id: one MQTT connection, its writes
// batched by one writer.
type peerCaller struct {
	nc      net.Conn
	out     chan packets.ControlPacket
	rid     atomic.Uint64
	mu      sync.Mutex
	waiting map[string]chan struct{}
	done    chan struct{}
}

func dialPeerCaller(ctx context.Context, addr string) (*peerCaller, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	r := bufio.NewReaderSize(nc, 64<<10)
	cp := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 4
	cp.ClientIdentifier, cp.CleanSession = "herd-bench-caller", true
	sp := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	sp.MessageID, sp.Topics, sp.Qoss = 1, []string{"peer/+/$iothub/methods/res/#"}, []byte{0}
	for _, p := range []packets.ControlPacket{cp, sp} {
		if err := p.Write(nc); err != nil {
			nc.Close()
			return nil, err
		}
		ack, err := packets.ReadPacket(r)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("caller: %w", err)
		}
		if ca, ok := ack.(*packets.ConnackPacket); ok && ca.ReturnCode != 0 {
			nc.Close()
			return nil, fmt.Errorf("caller refused: %s", packets.ConnackReturnCodes[ca.ReturnCode])
		}
	}
	c := &peerCaller{nc: nc, out: make(chan packets.ControlPacket, 4096), waiting: map[string]chan struct{}{}, done: make(chan struct{})}
	go c.write()
	go c.read(r)
	return c, nil
}

// call sends method "bench" to a device and waits for its answer (30 s at
// most, as MeasureRoundTrips's calls).
func (c *peerCaller) call(ctx context.Context, id string) error {
	rid := strconv.FormatUint(c.rid.Add(1), 10)
	answered := make(chan struct{})
	c.mu.Lock()
	c.waiting[rid] = answered
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, rid)
		c.mu.Unlock()
	}()
	pp := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	pp.TopicName, pp.Payload = sim.PeerTopicPrefix(id)+"$iothub/methods/POST/bench/?$rid="+rid, []byte(`{"n":1}`)
	select {
	case c.out <- pp:
	case <-c.done:
		return net.ErrClosed
	}
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-answered:
		return nil
	case <-t.C:
		return errors.New("no answer within 30 s")
	case <-c.done:
		return net.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *peerCaller) write() {
	w := bufio.NewWriterSize(c.nc, 64<<10)
	for {
		select {
		case p := <-c.out:
			if p.Write(w) != nil {
				return
			}
			if len(c.out) == 0 && w.Flush() != nil {
				return
			}
		case <-c.done:
			return
		}
	}
}

func (c *peerCaller) read(r *bufio.Reader) {
	defer func() {
		select {
		case <-c.done:
		default:
			close(c.done)
		}
	}()
	for {
		p, err := packets.ReadPacket(r)
		if err != nil {
			return
		}
		pp, ok := p.(*packets.PublishPacket)
		if !ok {
			continue
		}
		_, rid, _ := strings.Cut(pp.TopicName, "?$rid=")
		c.mu.Lock()
		ch := c.waiting[rid]
		delete(c.waiting, rid)
		c.mu.Unlock()
		if ch != nil {
			close(ch)
		}
	}
}

func (c *peerCaller) close() {
	_ = packets.NewControlPacket(packets.Disconnect).Write(c.nc)
	c.nc.Close()
	<-c.done
}
