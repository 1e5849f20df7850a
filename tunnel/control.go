package tunnel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"
)

// The control socket is a Unix socket on which the daemon answers every
// connection with its status as one JSON document; `braid status` reads it.

// ServeStatus serves status() on a Unix socket at path until ctx is done.
func ServeStatus(ctx context.Context, path string, status func() any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	os.Remove(path) // a stale socket of a previous run
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	os.Chmod(path, 0o600)
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	defer os.Remove(path)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		writeStatus(conn, status())
		conn.Close()
	}
}

// jsonStreamer is a status that writes itself as JSON a part at a time.
type jsonStreamer interface {
	WriteJSON(w io.Writer) error
}

// writeStatus writes st to w as JSON, followed by a newline.
func writeStatus(w io.Writer, st any) error {
	if js, ok := st.(jsonStreamer); ok {
		return js.WriteJSON(w)
	}
	return json.NewEncoder(w).Encode(st)
}

// ReadStatus reads the status document from the control socket at path.
func ReadStatus(path string) ([]byte, error) {
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w (is the daemon running?)", path, err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	return io.ReadAll(conn)
}
