package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// CursorStore persists, per channel, the highest sequence the application
// has handled. The client loads it before every CONNECT and saves after each
// message the handler accepted, so a restarted application resumes where it
// stopped and never sees a message twice.
type CursorStore interface {
	// Load returns every saved cursor.
	Load() (map[string]uint64, error)
	// Save records that seq is the highest handled on channel.
	Save(channel string, seq uint64) error
}

// MemoryCursors keeps cursors for the life of the process.
type MemoryCursors struct {
	mu sync.Mutex
	m  map[string]uint64
}

var _ CursorStore = (*MemoryCursors)(nil)

// Load implements CursorStore.
func (s *MemoryCursors) Load() (map[string]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.m))
	for k, v := range s.m {
		out[k] = v
	}
	return out, nil
}

// Save implements CursorStore.
func (s *MemoryCursors) Save(channel string, seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]uint64{}
	}
	s.m[channel] = seq
	return nil
}

// FileCursors keeps cursors in a JSON file, replaced atomically (write to a
// temporary file, then rename) on every Save.
type FileCursors struct {
	Path string

	mu sync.Mutex
	m  map[string]uint64
}

var _ CursorStore = (*FileCursors)(nil)

// Load implements CursorStore. A missing file is an empty state.
func (s *FileCursors) Load() (map[string]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		s.m = map[string]uint64{}
		return map[string]uint64{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("client: cannot read cursor file: %w", err)
	}
	var st struct {
		Cursors map[string]uint64 `json:"cursors"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("client: cursor file %s is corrupt: %w", s.Path, err)
	}
	if st.Cursors == nil {
		st.Cursors = map[string]uint64{}
	}
	s.m = st.Cursors
	out := make(map[string]uint64, len(s.m))
	for k, v := range s.m {
		out[k] = v
	}
	return out, nil
}

// Save implements CursorStore.
func (s *FileCursors) Save(channel string, seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]uint64{}
	}
	s.m[channel] = seq
	b, err := json.Marshal(struct {
		Cursors map[string]uint64 `json:"cursors"`
	}{s.m})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.Path), ".cursors-*")
	if err != nil {
		return fmt.Errorf("client: cannot save cursors: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("client: cannot save cursors: %w", err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("client: cannot save cursors: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.Path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("client: cannot save cursors: %w", err)
	}
	return nil
}
