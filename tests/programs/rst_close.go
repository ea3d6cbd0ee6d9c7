// rst_close N: the Go version of rst_close.py, built with CGO_ENABLED=0 (raw system calls):
// N times, a client with SetLinger(0) connects to a loopback listener of its own and closes;
// right after Close returns, the accepted side must already see the reset. Prints
// {"n":N,"late":L}.
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		fmt.Printf("{\"error\":%q}\n", err.Error())
		os.Exit(1)
	}
	late := 0
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp4", l.Addr().String())
		if err != nil {
			fmt.Printf("{\"error\":%q}\n", err.Error())
			os.Exit(1)
		}
		a, err := l.Accept()
		if err != nil {
			fmt.Printf("{\"error\":%q}\n", err.Error())
			os.Exit(1)
		}
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		raw, _ := a.(*net.TCPConn).SyscallConn()
		reset := false
		raw.Control(func(fd uintptr) {
			b := make([]byte, 1)
			_, _, err := syscall.Recvfrom(int(fd), b, syscall.MSG_DONTWAIT|syscall.MSG_PEEK)
			reset = err == syscall.ECONNRESET
		})
		if !reset {
			late++
		}
		a.Close()
	}
	fmt.Printf("{\"n\":%d,\"late\":%d}\n", n, late)
}
