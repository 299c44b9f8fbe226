// Command natstestd runs a throwaway NATS server on a free loopback port
// for test runners that are not Go tests, such as the official-SDK suite
// in compat/node against a cluster: it prints the server's URL on its
// first line of output and serves until its standard input closes or it
// is signalled.
//
//	go run ./internal/hubtest/natstestd
package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "natstestd:", err)
		os.Exit(1)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		fmt.Fprintln(os.Stderr, "natstestd: the server is not ready within 10 s")
		os.Exit(1)
	}
	fmt.Println(ns.ClientURL())
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	select {
	case <-done:
	case <-sig:
	}
	ns.Shutdown()
	ns.WaitForShutdown()
}
