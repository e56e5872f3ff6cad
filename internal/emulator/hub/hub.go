package hub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/store"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// Buckets the hub keeps in its store.
const (
	bucketIdentities = "identities"
	bucketMeta       = "meta"
	keySequence      = "sequence"
)

// Buckets lists the store buckets the hub needs; pass them to store.Open.
var Buckets = []string{bucketIdentities, bucketMeta}

// Options configure a Hub.
type Options struct {
	// HostName is the hub's host name without port; Port is the port its
	// HTTPS listener has ("" when unknown). Tokens may name the host with
	// or without that port.
	HostName string
	Port     string
	// Policies are the shared access policies (see DefaultPolicies).
	Policies []Policy
	// Store keeps identities and twins; nil keeps nothing.
	Store *store.Store
	// Now reads the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Hub is the emulator's IoT Hub core. All methods are safe for concurrent
// use. Writes return once they are durable in the store.
type Hub struct {
	host     string
	port     string
	policies map[string]Policy
	st       *store.Store
	ownStore bool
	now      func() time.Time
	log      *slog.Logger

	mu       sync.RWMutex
	devices  map[string]*device
	links    map[IdentityRef]link
	sequence int64 // last identity etag number handed out

	subMu sync.Mutex
	subs  map[int]Events
	subID int
}

// device is a device identity with its modules.
type device struct {
	*identity
	modules map[string]*identity
}

// identity is a device or module as stored: registry fields and twin.
type identity struct {
	DeviceID      string     `json:"deviceId"`
	ModuleID      string     `json:"moduleId,omitempty"`
	GenerationID  string     `json:"generationId"`
	ETag          int64      `json:"etag"`
	Status        string     `json:"status,omitempty"` // devices only
	StatusReason  *string    `json:"statusReason,omitempty"`
	StatusUpdated time.Time  `json:"statusUpdated"`
	ManagedBy     *string    `json:"managedBy,omitempty"` // modules only
	IoTEdge       bool       `json:"iotEdge,omitempty"`
	DeviceScope   string     `json:"deviceScope,omitempty"`
	ParentScopes  []string   `json:"parentScopes,omitempty"`
	Auth          authRecord `json:"auth"`
	Twin          twin       `json:"twin"`
}

// link is an identity's connection as the device side reports it. It is
// not stored (after a restart nothing is connected) and is kept apart from
// the identity records, so that reloading them keeps it. An entry goes
// when its identity is created again or reported on after its deletion.
type link struct {
	connected    bool
	updated      time.Time
	lastActivity time.Time
}

type authRecord struct {
	Type                string  `json:"type"`
	PrimaryKey          string  `json:"primaryKey,omitempty"`
	SecondaryKey        string  `json:"secondaryKey,omitempty"`
	PrimaryThumbprint   *string `json:"primaryThumbprint,omitempty"`
	SecondaryThumbprint *string `json:"secondaryThumbprint,omitempty"`
}

// twin is a twin's state: etag counter, version, tags and properties.
type twin struct {
	ETag     int64   `json:"etag"`
	Version  int64   `json:"version"`
	Tags     object  `json:"tags"`
	Desired  section `json:"desired"`
	Reported section `json:"reported"`
}

// A new twin has etag 1 and version 2, as a real hub shows it.
func newTwin() twin {
	return twin{ETag: 1, Version: 2, Tags: object{}, Desired: newSection(), Reported: newSection()}
}

func (i *identity) ref() IdentityRef { return IdentityRef{DeviceID: i.DeviceID, ModuleID: i.ModuleID} }

// New builds a hub and loads what its store holds.
func New(opts Options) (*Hub, error) {
	if opts.HostName == "" {
		return nil, fmt.Errorf("hub: host name is empty")
	}
	h := &Hub{
		host:     opts.HostName,
		port:     opts.Port,
		policies: map[string]Policy{},
		st:       opts.Store,
		now:      opts.Now,
		log:      opts.Logger,
		devices:  map[string]*device{},
		links:    map[IdentityRef]link{},
		subs:     map[int]Events{},
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log == nil {
		h.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if h.st == nil {
		h.st = store.Memory()
		h.ownStore = true
	}
	for _, p := range opts.Policies {
		h.policies[p.KeyName] = p
	}
	if err := h.load(); err != nil {
		return nil, err
	}
	return h, nil
}

// Close releases a store the hub made itself; a store passed in Options
// belongs to the caller.
func (h *Hub) Close() error {
	if h.ownStore {
		return h.st.Close()
	}
	return nil
}

// HostName returns the hub's host name without port.
func (h *Hub) HostName() string { return h.host }

// Policy returns the shared access policy called name.
func (h *Hub) Policy(name string) (Policy, bool) {
	p, ok := h.policies[name]
	return p, ok
}

func (h *Hub) load() error {
	devices, sequence, err := h.loadState()
	if err != nil {
		return err
	}
	h.devices, h.sequence = devices, sequence
	return nil
}

// loadState reads the identities and the etag sequence from the store.
func (h *Hub) loadState() (map[string]*device, int64, error) {
	devices := map[string]*device{}
	var modules []*identity
	err := h.st.Load(bucketIdentities, func(key string, value []byte) error {
		id := &identity{}
		dec := json.NewDecoder(bytes.NewReader(value))
		dec.UseNumber()
		if err := dec.Decode(id); err != nil {
			return fmt.Errorf("decode identity %q: %w", key, err)
		}
		id.Twin.normalize()
		if id.ModuleID == "" {
			devices[id.DeviceID] = &device{identity: id, modules: map[string]*identity{}}
		} else {
			modules = append(modules, id)
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("hub: load identities: %w", err)
	}
	for _, m := range modules {
		d := devices[m.DeviceID]
		if d == nil {
			h.log.Warn("dropping stored module of a missing device", "device", m.DeviceID, "module", m.ModuleID)
			continue
		}
		d.modules[m.ModuleID] = m
	}
	var sequence int64
	err = h.st.Load(bucketMeta, func(key string, value []byte) error {
		if key == keySequence {
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil {
				return fmt.Errorf("decode %s: %w", key, err)
			}
			sequence = n
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("hub: load metadata: %w", err)
	}
	return devices, sequence, nil
}

// resync drops what a failed write left in memory: the hub changes its
// state before the store commits, so after a commit failure (which halts
// the store) it reloads what the store holds. Until a reload works,
// writes keep failing.
func (h *Hub) resync() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.st.Halted() == nil {
		return // not halted, or another writer has reloaded already
	}
	devices, sequence, err := h.loadState()
	if err != nil {
		h.log.Error("reload after a failed store write", "err", err)
		return
	}
	// The etag sequence never goes back: a reader may have seen a number
	// handed out to a change that then failed.
	h.devices, h.sequence = devices, max(h.sequence, sequence)
	h.st.Resume()
}

// normalize fills what an older or hand-edited record may lack.
func (t *twin) normalize() {
	if t.Tags == nil {
		t.Tags = object{}
	}
	for _, s := range []*section{&t.Desired, &t.Reported} {
		if s.Props == nil {
			s.Props = object{}
		}
		if s.Meta == nil {
			s.Meta = &meta{}
		}
	}
}

// nextETag hands out the next identity etag number. Callers hold h.mu.
func (h *Hub) nextETag() int64 {
	h.sequence++
	return h.sequence
}

func identityKey(r IdentityRef) string { return r.String() }

// putOps returns the store writes that save ids and the sequence.
func (h *Hub) putOps(ids ...*identity) []store.Op {
	ops := make([]store.Op, 0, len(ids)+1)
	for _, id := range ids {
		b, err := json.Marshal(id)
		if err != nil {
			panic(fmt.Sprintf("hub: encode identity: %v", err)) // only plain data
		}
		ops = append(ops, store.Op{Bucket: bucketIdentities, Key: identityKey(id.ref()), Value: b})
	}
	return append(ops, store.Op{Bucket: bucketMeta, Key: keySequence, Value: []byte(strconv.FormatInt(h.sequence, 10))})
}

// notices are what subscribers hear of a change once it is durable.
type notices struct {
	patches  []DesiredPatch
	revoked  []Revocation
	twins    []TwinChange
	registry []RegistryChange
}

// commit queues ops (callers hold h.mu, so queue order is commit order)
// and tells subscribers about the change once it is durable.
func (h *Hub) commit(ops []store.Op, n notices) *store.Pending {
	var after func(error)
	if len(n.patches) > 0 || len(n.revoked) > 0 || len(n.twins) > 0 || len(n.registry) > 0 {
		after = func(err error) {
			if err == nil {
				h.notify(n)
			}
		}
	}
	return h.st.Enqueue(ops, after)
}

// wait turns a store failure into a ServerError the client may see, once
// the hub's state is back to what the store holds.
func (h *Hub) wait(p *store.Pending) error {
	if err := p.Wait(); err != nil {
		h.log.Error("store write failed", "err", err)
		h.resync()
		return newError(iothub.ServerError, "the hub could not save the change")
	}
	return nil
}

// Subscribe registers callbacks for every committed change of any
// identity; see Events and the mqttgw.Hub contract.
func (h *Hub) Subscribe(ev Events) (cancel func()) {
	h.subMu.Lock()
	h.subID++
	id := h.subID
	h.subs[id] = ev
	h.subMu.Unlock()
	return func() {
		h.subMu.Lock()
		delete(h.subs, id)
		h.subMu.Unlock()
	}
}

// notify calls the subscribers in the order they subscribed.
func (h *Hub) notify(n notices) {
	h.subMu.Lock()
	ids := make([]int, 0, len(h.subs))
	for id := range h.subs {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	subs := make([]Events, 0, len(ids))
	for _, id := range ids {
		subs = append(subs, h.subs[id])
	}
	h.subMu.Unlock()
	for _, ev := range subs {
		if ev.Desired != nil {
			for _, p := range n.patches {
				ev.Desired(p)
			}
		}
		if ev.Revoked != nil {
			for _, r := range n.revoked {
				ev.Revoked(r)
			}
		}
		if ev.Twin != nil {
			for _, c := range n.twins {
				ev.Twin(c)
			}
		}
		if ev.Registry != nil {
			for _, c := range n.registry {
				ev.Registry(c)
			}
		}
	}
}

// lookup finds an identity. Callers hold h.mu.
func (h *Hub) lookup(r IdentityRef) (*identity, error) {
	d := h.devices[r.DeviceID]
	if d == nil {
		return nil, deviceNotFound(r.DeviceID)
	}
	if !r.IsModule() {
		return d.identity, nil
	}
	m := d.modules[r.ModuleID]
	if m == nil {
		return nil, moduleNotFound(r.DeviceID, r.ModuleID)
	}
	return m, nil
}

// SetConnectionState records that id connected or disconnected at t; see
// the mqttgw.Hub contract.
func (h *Hub) SetConnectionState(r IdentityRef, connected bool, t time.Time) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, err := h.lookup(r); err != nil {
		delete(h.links, r)
		return err
	}
	if connected && h.devices[r.DeviceID].Status == iothub.Disabled {
		return newError(iothub.IotHubUnauthorizedAccess, "device %s is disabled", r.DeviceID)
	}
	l := h.links[r]
	l.connected = connected
	l.updated = t
	if connected {
		l.lastActivity = t
	}
	h.links[r] = l
	return nil
}

// RecordActivity sets id's lastActivityTime to t.
func (h *Hub) RecordActivity(r IdentityRef, t time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, err := h.lookup(r); err != nil {
		return
	}
	if l := h.links[r]; t.After(l.lastActivity) {
		l.lastActivity = t
		h.links[r] = l
	}
}

// generationID looks like the .NET ticks a real hub uses.
func generationID(t time.Time) string {
	const unixEpochTicks = 621355968000000000
	return strconv.FormatInt(t.UnixNano()/100+unixEpochTicks, 10)
}
