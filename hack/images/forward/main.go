// forward relays TCP connections from LISTEN to TARGET: the test node's pods reach the API server
// and the Huawei simulator, which listen on loopback, through an address on the rig's own bridge.
//
//	forward LISTEN TARGET    e.g. forward 10.0.0.1:443 127.0.0.1:6443
//
// It prints "listening on ADDR" once bound (LISTEN may use port 0) and runs until killed.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: forward LISTEN TARGET")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "forward:", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	target := os.Args[2]
	for {
		c, err := ln.Accept()
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go relay(c, target)
	}
}

func relay(c net.Conn, target string) {
	defer c.Close()
	u, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return
	}
	defer u.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(u, c)
	go pipe(c, u)
	<-done
	<-done
}
