package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/shim-cri/shim/pkg/daemon"
	"github.com/shim-cri/shim/pkg/engine"
)

var jobsCommand = &cli.Command{
	Name:  "jobs",
	Usage: "list the running and recent jobs of a running shim",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "state", Value: "/run/shim", Usage: "state directory of the daemon (its admin.sock)"},
		&cli.StringFlag{Name: "name", Usage: "only jobs with this name (pull, image_status, ...)"},
		&cli.StringFlag{Name: "status", Usage: "only running, succeeded or failed jobs"},
		&cli.BoolFlag{Name: "json", Usage: "print JSON"},
	},
	Action: func(c *cli.Context) error {
		sock := filepath.Join(c.String("state"), daemon.AdminSocket)
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", sock)
			},
		}}
		q := url.Values{}
		for _, k := range []string{"name", "status"} {
			if v := c.String(k); v != "" {
				q.Set(k, v)
			}
		}
		resp, err := client.Get("http://shim/jobs?" + q.Encode())
		if err != nil {
			return fmt.Errorf("is shim running? %w", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if err != nil {
			return err
		}
		if c.Bool("json") {
			os.Stdout.Write(body)
			return nil
		}
		var jobs []engine.JobInfo
		if err := json.Unmarshal(body, &jobs); err != nil {
			return err
		}
		w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tJOB\tSTATUS\tSTARTED\tDURATION\tOBJECT\tERROR")
		for _, j := range jobs {
			errText := j.Error
			if len(errText) > 80 {
				errText = errText[:80] + "..."
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Name, j.Status,
				j.Start.Format(time.RFC3339), j.Duration.Round(time.Microsecond), j.Object, strings.ReplaceAll(errText, "\n", " "))
		}
		return w.Flush()
	},
}
