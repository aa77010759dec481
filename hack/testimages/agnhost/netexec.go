package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// netexec is the networking test server: HTTP on --http-port (HTTPS with
// --tls-cert-file/--tls-private-key-file) and UDP on --udp-port (-1: none).
//
// HTTP: / (the time), /echo?msg=M[&code=C], /clientip, /serverport,
// /header[?key=K], /hostname and /hostName, /envvar?var=V, /healthz and
// /readyz (200 once the UDP server listens; /readyz 503 after SIGTERM),
// /redirect?location=L[&code=C], /dial?host=H&port=P&request=R[&protocol=
// http|udp][&tries=N] (JSON {"responses": [...], "errors": [...]}),
// /shell?cmd=C (JSON {"output", "error"}), /upload (multipart "file" into
// /uploads), /exit?code=C[&wait=D][&timeout=D], /shutdown.
// UDP: "hostname", "echo M", "clientip", "serverport", "envvar V".
// --http-override PATH answers every request as GET PATH.
// SIGTERM exits 0 after --delay-shutdown seconds.
func netexec(args []string) error {
	fs := newFlags("netexec")
	n := &netexecServer{}
	fs.IntVar(&n.httpPort, "http-port", 8080, "HTTP port")
	cert := fs.String("tls-cert-file", "", "serve HTTPS with this certificate")
	key := fs.String("tls-private-key-file", "", "and this key")
	fs.IntVar(&n.udpPort, "udp-port", 8081, "UDP port; -1: no UDP server")
	sctpPort := fs.Int("sctp-port", -1, "SCTP port (not supported by this stand-in)")
	override := fs.String("http-override", "", "answer every request as GET of this path and query")
	udpAddrs := fs.String("udp-listen-addresses", "", "comma-separated addresses for the UDP servers (default: all)")
	delayShutdown := fs.Int("delay-shutdown", 0, "seconds to wait after SIGTERM before exiting")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *sctpPort != -1 {
		return fmt.Errorf("--sctp-port: SCTP is not implemented by this stand-in")
	}
	if (*cert == "") != (*key == "") {
		return fmt.Errorf("--tls-cert-file and --tls-private-key-file go together")
	}

	n.sigterm = make(chan struct{})
	n.exits = make(chan exitRequest)
	terms := make(chan os.Signal, 1)
	signal.Notify(terms, syscall.SIGTERM)
	go func() {
		<-terms
		close(n.sigterm)
		if *delayShutdown > 0 {
			log.Printf("Sleeping %d seconds before terminating...", *delayShutdown)
			time.Sleep(time.Duration(*delayShutdown) * time.Second)
		}
		os.Exit(0)
	}()

	mux := http.NewServeMux()
	n.routes(mux)
	var handler http.Handler = mux
	if *override != "" {
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, *override, nil)
			if err != nil {
				http.Error(w, fmt.Sprintf("override request failed: %v", err), http.StatusInternalServerError)
				return
			}
			req.RemoteAddr = r.RemoteAddr
			mux.ServeHTTP(w, req)
		})
	}

	if n.udpPort != -1 {
		addrs := []string{""}
		if *udpAddrs != "" {
			addrs = strings.Split(*udpAddrs, ",")
			for _, a := range addrs {
				if net.ParseIP(a) == nil {
					return fmt.Errorf("--udp-listen-addresses: invalid address %q", a)
				}
			}
		}
		for _, a := range addrs {
			go n.serveUDP(a)
		}
	}

	srv := &http.Server{Addr: ":" + strconv.Itoa(n.httpPort), Handler: handler}
	go func() {
		req := <-n.exits
		ctx, cancel := context.WithTimeout(context.Background(), req.timeout)
		defer cancel()
		log.Printf("Graceful shutdown completed with: %v", srv.Shutdown(ctx))
		os.Exit(req.code)
	}()
	log.Printf("Started HTTP server on port %d", n.httpPort)
	var err error
	if *cert != "" {
		err = srv.ListenAndServeTLS(*cert, *key)
	} else {
		err = srv.ListenAndServe()
	}
	if err == http.ErrServerClosed {
		select {} // the exit goroutine ends the process
	}
	return err
}

type exitRequest struct {
	code    int
	timeout time.Duration
}

type netexecServer struct {
	httpPort, udpPort int
	udpReady          atomic.Bool
	sigterm           chan struct{}
	exits             chan exitRequest
}

func (n *netexecServer) routes(mux *http.ServeMux) {
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("GET /")
		fmt.Fprintf(w, "NOW: %v", time.Now())
	})
	mux.HandleFunc("/echo", n.echo)
	mux.HandleFunc("/clientip", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("GET /clientip")
		fmt.Fprint(w, r.RemoteAddr)
	})
	mux.HandleFunc("/serverport", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("GET /serverport")
		fmt.Fprint(w, n.httpPort)
	})
	mux.HandleFunc("/header", n.header)
	mux.HandleFunc("/dial", n.dial)
	mux.HandleFunc("/exit", n.exit)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("GET /healthz")
		if !n.ready() {
			w.WriteHeader(http.StatusPreconditionFailed)
		}
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("GET /readyz")
		select {
		case <-n.sigterm:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, "shutting down")
			return
		default:
		}
		if !n.ready() {
			w.WriteHeader(http.StatusPreconditionFailed)
			return
		}
		fmt.Fprint(w, "ok")
	})
	hostname := func(w http.ResponseWriter, r *http.Request) {
		log.Printf("GET %s", r.URL.Path)
		fmt.Fprint(w, hostName())
	}
	mux.HandleFunc("/hostname", hostname)
	mux.HandleFunc("/hostName", hostname)
	mux.HandleFunc("/envvar", func(w http.ResponseWriter, r *http.Request) {
		name := r.FormValue("var")
		if name == "" {
			http.Error(w, "'var' query parameter is required", http.StatusBadRequest)
			return
		}
		log.Printf("GET /envvar?var=%s", name)
		v, ok := os.LookupEnv(name)
		if !ok {
			http.Error(w, fmt.Sprintf("env var %q is not set", name), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, v)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		loc, codeStr := r.FormValue("location"), r.FormValue("code")
		log.Printf("%s /redirect?msg=%s&code=%s", r.Method, loc, codeStr)
		code := http.StatusFound
		if codeStr != "" {
			c, err := strconv.Atoi(codeStr)
			if err != nil {
				fmt.Fprintf(w, "argument 'code' must be an integer or empty, got %q\n", codeStr)
				return
			}
			code = c
		}
		http.Redirect(w, r, loc, code)
	})
	mux.HandleFunc("/shell", n.shell)
	mux.HandleFunc("/upload", n.upload)
	mux.HandleFunc("/shutdown", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("GET /shutdown")
		os.Exit(0)
	})
}

// ready: the UDP server listens (or there is none).
func (n *netexecServer) ready() bool { return n.udpPort == -1 || n.udpReady.Load() }

func (n *netexecServer) echo(w http.ResponseWriter, r *http.Request) {
	msg, codeStr := r.FormValue("msg"), r.FormValue("code")
	log.Printf("GET /echo?msg=%s&code=%s", msg, codeStr)
	if codeStr != "" {
		code, err := strconv.Atoi(codeStr)
		if err != nil {
			fmt.Fprintf(w, "argument 'code' must be an integer or empty, got %q\n", codeStr)
			return
		}
		w.WriteHeader(code)
	}
	fmt.Fprint(w, msg)
}

func (n *netexecServer) header(w http.ResponseWriter, r *http.Request) {
	if key := r.FormValue("key"); key != "" {
		log.Printf("GET /header?key=%s", key)
		fmt.Fprint(w, r.Header.Get(key))
		return
	}
	log.Printf("GET /header")
	writeJSON(w, r.Header)
}

func (n *netexecServer) exit(w http.ResponseWriter, r *http.Request) {
	waitStr, timeoutStr, codeStr := r.FormValue("wait"), r.FormValue("timeout"), r.FormValue("code")
	log.Printf("GET /exit?code=%s&timeout=%s&wait=%s", codeStr, timeoutStr, waitStr)
	var timeout, wait time.Duration
	var code int
	var err error
	if timeoutStr != "" {
		if timeout, err = time.ParseDuration(timeoutStr); err != nil {
			fmt.Fprintf(w, "argument 'timeout' must be a valid golang duration or empty, got %q\n", timeoutStr)
			return
		}
	}
	if waitStr != "" {
		if wait, err = time.ParseDuration(waitStr); err != nil {
			fmt.Fprintf(w, "argument 'wait' must be a valid golang duration or empty, got %q\n", waitStr)
			return
		}
	}
	if codeStr != "" {
		if code, err = strconv.Atoi(codeStr); err != nil {
			fmt.Fprintf(w, "argument 'code' must be an integer [0-127] or empty, got %q\n", codeStr)
			return
		}
	}
	log.Printf("Will begin shutdown in %s, allowing %s for connections to close, then will exit with %d", wait, timeout, code)
	time.Sleep(wait)
	if timeout == 0 {
		os.Exit(code)
	}
	n.exits <- exitRequest{code: code, timeout: timeout}
}

func (n *netexecServer) dial(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	host, port, request, protocol, triesStr := q.Get("host"), q.Get("port"), q.Get("request"), q.Get("protocol"), q.Get("tries")
	log.Printf("GET /dial?host=%s&protocol=%s&port=%s&request=%s&tries=%s", host, protocol, port, request, triesStr)
	tries := 1
	if triesStr != "" {
		t, err := strconv.Atoi(triesStr)
		if err != nil {
			http.Error(w, fmt.Sprintf("tries parameter is invalid. %v", err), http.StatusBadRequest)
			return
		}
		tries = t
	}
	if request == "" {
		http.Error(w, "request parameter not specified.", http.StatusBadRequest)
		return
	}
	hostPort := net.JoinHostPort(host, port)
	var dialer func(string, string) (string, error)
	var err error
	switch strings.ToLower(protocol) {
	case "", "http":
		dialer = dialHTTP
		_, err = net.ResolveTCPAddr("tcp", hostPort)
	case "udp":
		dialer = dialUDP
		_, err = net.ResolveUDPAddr("udp", hostPort)
	default:
		http.Error(w, fmt.Sprintf("unsupported protocol. %s", protocol), http.StatusBadRequest)
		return
	}
	if err != nil {
		http.Error(w, fmt.Sprintf("host and/or port param are invalid. %v", err), http.StatusBadRequest)
		return
	}
	var responses, errs []string
	var last string
	for range tries {
		resp, err := dialer(request, hostPort)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		last = resp
		responses = append(responses, resp)
	}
	out := map[string][]string{}
	if last != "" {
		out["responses"] = responses
	}
	if len(errs) > 0 {
		out["errors"] = errs
	}
	writeJSON(w, out)
}

func dialHTTP(request, hostPort string) (string, error) {
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s/%s", hostPort, request))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func dialUDP(request, hostPort string) (string, error) {
	c, err := net.Dial("udp", hostPort)
	if err != nil {
		return "", fmt.Errorf("udp dial failed. err:%v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(request)); err != nil {
		return "", fmt.Errorf("udp connection write failed. err:%v", err)
	}
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil || n == 0 {
		return "", fmt.Errorf("reading from udp connection failed. err:'%v'", err)
	}
	return string(buf[:n]), nil
}

func (n *netexecServer) shell(w http.ResponseWriter, r *http.Request) {
	cmd := r.FormValue("shellCommand")
	if cmd == "" {
		cmd = r.FormValue("cmd")
	}
	log.Printf("GET /shell?cmd=%s", cmd)
	b, err := exec.Command("/bin/sh", "-c", cmd).CombinedOutput()
	out := map[string]string{}
	if len(b) > 0 {
		out["output"] = string(b)
	}
	if err != nil {
		out["error"] = err.Error()
	}
	writeJSON(w, out)
}

func (n *netexecServer) upload(w http.ResponseWriter, r *http.Request) {
	log.Printf("GET /upload")
	fail := func(msg string, err error) {
		log.Printf("%s: %v", msg, err)
		writeJSON(w, map[string]string{"error": msg})
	}
	in, _, err := r.FormFile("file")
	if err != nil {
		fail("Unable to upload file.", err)
		return
	}
	defer in.Close()
	f, err := os.CreateTemp("/uploads", "upload")
	if err != nil {
		fail("Unable to open file for write", err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, in); err != nil {
		fail("Unable to write file.", err)
		return
	}
	if err := os.Chmod(f.Name(), 0o700); err != nil {
		fail("Unable to chmod file.", err)
		return
	}
	log.Printf("Wrote upload to %s", f.Name())
	w.WriteHeader(http.StatusCreated)
	writeJSON(w, map[string]string{"output": f.Name()})
}

func (n *netexecServer) serveUDP(addr string) {
	c, err := net.ListenPacket("udp", net.JoinHostPort(addr, strconv.Itoa(n.udpPort)))
	if err != nil {
		log.Fatalf("UDP listen on %s port %d: %v", addr, n.udpPort, err)
	}
	defer c.Close()
	log.Printf("Started UDP server on port %s %d", addr, n.udpPort)
	n.udpReady.Store(true)
	buf := make([]byte, 2048)
	for {
		k, from, err := c.ReadFrom(buf)
		if err != nil {
			log.Fatalf("UDP read: %v", err)
		}
		raw := strings.TrimSpace(string(buf[:k]))
		text := strings.ToLower(raw)
		var reply string
		switch {
		case text == "hostname":
			reply = hostName()
		case strings.HasPrefix(text, "envvar "):
			reply = os.Getenv(strings.TrimSpace(strings.SplitN(raw, " ", 2)[1]))
		case strings.HasPrefix(text, "echo "):
			reply = strings.SplitN(text, " ", 2)[1]
		case text == "clientip":
			reply = from.String()
		case text == "serverport":
			reply = strconv.Itoa(n.udpPort)
		default:
			if text != "" {
				log.Printf("Unknown UDP command received from %s: %v", from, text)
			}
			continue
		}
		if _, err := c.WriteTo([]byte(reply), from); err != nil {
			log.Fatalf("UDP reply to %s: %v", from, err)
		}
	}
}

func hostName() string {
	h, err := os.Hostname()
	if err != nil {
		log.Fatalf("hostname: %v", err)
	}
	return h
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, fmt.Sprintf("response could not be serialized. %v", err), http.StatusExpectationFailed)
		return
	}
	_, _ = w.Write(b)
}
