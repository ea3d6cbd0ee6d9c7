// go_client: a Go HTTP client for the seccomp supervisor's tests (cli/tests/supervise.rs),
// built there with CGO_ENABLED=0: a static Go binary, which makes its system calls without libc
// and which no preload library reaches. Go turns keepalive on by itself (15 s idle and
// interval since Go 1.13) right after connecting. Prints lines on stdout:
//
//	hold URL      GET with no timeout (to a server that never answers): prints `connected`
//	              once the connection is up, then waits
//	session URL   one GET (`first-done`), waits for a line on stdin, a second GET on the same
//	              kept-alive connection; prints `result ok|ERROR SECONDS`
package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"time"
)

func get(client *http.Client, url string, connected func()) error {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return err
	}
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { connected() }}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: go_client hold|session URL")
		os.Exit(2)
	}
	client := &http.Client{}
	url := os.Args[2]
	switch os.Args[1] {
	case "hold":
		err := get(client, url, func() { fmt.Println("connected") })
		fmt.Println("result", err)
	case "session":
		if err := get(client, url, func() {}); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("first-done")
		bufio.NewReader(os.Stdin).ReadString('\n')
		start := time.Now()
		err := get(client, url, func() {})
		outcome := "ok"
		if err != nil {
			outcome = fmt.Sprintf("%q", err.Error())
		}
		fmt.Printf("result %s %.2f\n", outcome, time.Since(start).Seconds())
	}
}
