package ca

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// A join token reads "wgjt.<id>.<secret>": the ID finds the stored token,
// whose SHA-256 of the secret is compared. Only the hash is stored, so a
// copy of etcd cannot join the mesh.
const tokenPrefix = "wgjt."

// Bounds of a join token.
const (
	DefaultTokenTTL = time.Hour
	MaxTokenTTL     = 30 * 24 * time.Hour
	MaxTokenUses    = 10000
)

// TokenInfo describes a stored join token; it never holds the secret.
type TokenInfo struct {
	ID             string    `json:"id"`
	Namespace      string    `json:"namespace"`
	ServiceAccount string    `json:"service_account"`
	SPIFFEID       string    `json:"spiffe_id"`
	Uses           int       `json:"uses"`
	Used           int       `json:"used"`
	ExpiresAt      time.Time `json:"expires_at"`
	CreatedAt      time.Time `json:"created_at"`
	CreatedBy      string    `json:"created_by,omitempty"`
}

type storedToken struct {
	TokenInfo
	Hash string `json:"sha256"`
}

// tokenUse is a checked token that Sign uses up once it has checked the
// rest of the request.
type tokenUse struct {
	key string
	rev int64
	st  storedToken
	id  spiffeid.ID
}

// CreateToken stores a join token for one identity, valid for ttl (zero
// means DefaultTokenTTL) and uses requests (zero means one). It returns
// the token's text, shown once.
func (c *CA) CreateToken(ctx context.Context, namespace, serviceAccount string, ttl time.Duration, uses int, by string) (string, TokenInfo, error) {
	id, err := c.ID(namespace, serviceAccount)
	if err != nil {
		return "", TokenInfo{}, err
	}
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < time.Second || ttl > MaxTokenTTL {
		return "", TokenInfo{}, fmt.Errorf("ttl: %s must be between 1s and %s", ttl, MaxTokenTTL)
	}
	if uses == 0 {
		uses = 1
	}
	if uses < 1 || uses > MaxTokenUses {
		return "", TokenInfo{}, fmt.Errorf("uses: %d must be between 1 and %d", uses, MaxTokenUses)
	}
	var raw [8 + 24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", TokenInfo{}, err
	}
	tid, sec := hex.EncodeToString(raw[:8]), hex.EncodeToString(raw[8:])
	now := time.Now().UTC()
	st := storedToken{TokenInfo: TokenInfo{ID: tid, Namespace: namespace, ServiceAccount: serviceAccount, SPIFFEID: id.String(),
		Uses: uses, ExpiresAt: now.Add(ttl), CreatedAt: now, CreatedBy: by}, Hash: hashSecret(sec)}
	b, _ := json.Marshal(st)
	// The record outlives its expiry by a day, so that a late attempt is
	// told the token expired rather than that it is unknown.
	lease, err := c.cli.Grant(ctx, int64((ttl+24*time.Hour)/time.Second))
	if err != nil {
		return "", TokenInfo{}, fmt.Errorf("storing the token: %w", err)
	}
	if _, err := c.cli.Put(ctx, c.keys.token(tid), string(b), clientv3.WithLease(lease.ID)); err != nil {
		return "", TokenInfo{}, fmt.Errorf("storing the token: %w", err)
	}
	c.logger.Info("join token created", zap.String("token_id", tid), zap.String("spiffe_id", id.String()),
		zap.Int("uses", uses), zap.Time("expires_at", st.ExpiresAt), zap.String("by", by))
	return tokenPrefix + tid + "." + sec, st.TokenInfo, nil
}

func hashSecret(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// splitToken returns a token's ID and secret.
func splitToken(tok string) (string, string, bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(tok), tokenPrefix)
	if !ok {
		return "", "", false
	}
	id, sec, ok := strings.Cut(rest, ".")
	return id, sec, ok && len(id) == 16 && len(sec) == 48
}

// TokenID returns the ID part of a token's text, or the text when it is
// an ID already.
func TokenID(tok string) string {
	if id, _, ok := splitToken(tok); ok {
		return id
	}
	return strings.TrimSpace(tok)
}

func (c *CA) checkToken(ctx context.Context, tok string) (*tokenUse, error) {
	tid, sec, ok := splitToken(tok)
	if !ok {
		return nil, refuse("join_token", "malformed (want wgjt.<id>.<secret> as printed by `wasmgate ctl token create`)")
	}
	key := c.keys.token(tid)
	resp, err := c.cli.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("reading the join token: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, refuse("join_token", "unknown or revoked token %s", tid)
	}
	var st storedToken
	if err := json.Unmarshal(resp.Kvs[0].Value, &st); err != nil {
		return nil, fmt.Errorf("join token %s: corrupt record: %w", tid, err)
	}
	if subtle.ConstantTimeCompare([]byte(hashSecret(sec)), []byte(st.Hash)) != 1 {
		return nil, refuse("join_token", "token %s: wrong secret", tid)
	}
	if time.Now().After(st.ExpiresAt) {
		return nil, refuse("join_token", "token %s expired at %s", tid, st.ExpiresAt.Format(time.RFC3339))
	}
	if st.Used >= st.Uses {
		return nil, refuse("join_token", "token %s was already used (%d of %d uses)", tid, st.Used, st.Uses)
	}
	id, err := c.ID(st.Namespace, st.ServiceAccount)
	if err != nil {
		return nil, err
	}
	return &tokenUse{key: key, rev: resp.Kvs[0].ModRevision, st: st, id: id}, nil
}

// useToken counts one use, with compare-and-swap so that a use is counted
// once however many requests race, and applies also in the same
// transaction.
func (c *CA) useToken(ctx context.Context, u *tokenUse, also ...clientv3.Op) error {
	for {
		u.st.Used++
		b, _ := json.Marshal(u.st)
		resp, err := c.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(u.key), "=", u.rev)).
			Then(append([]clientv3.Op{clientv3.OpPut(u.key, string(b), clientv3.WithIgnoreLease())}, also...)...).
			Else(clientv3.OpGet(u.key)).Commit()
		if err != nil {
			return fmt.Errorf("using the join token: %w", err)
		}
		if resp.Succeeded {
			return nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return refuse("join_token", "token %s was revoked", u.st.ID)
		}
		if err := json.Unmarshal(kvs[0].Value, &u.st); err != nil {
			return err
		}
		u.rev = kvs[0].ModRevision
		if u.st.Used >= u.st.Uses {
			return refuse("join_token", "token %s was already used (%d of %d uses)", u.st.ID, u.st.Used, u.st.Uses)
		}
	}
}

// RevokeToken deletes a join token, by its ID or its text.
func (c *CA) RevokeToken(ctx context.Context, idOrToken string) error {
	id := TokenID(idOrToken)
	resp, err := c.cli.Delete(ctx, c.keys.token(id))
	if err != nil {
		return fmt.Errorf("revoking the join token: %w", err)
	}
	if resp.Deleted == 0 {
		return ErrNoToken
	}
	c.logger.Info("join token revoked", zap.String("token_id", id))
	return nil
}

// ErrNoToken is returned when revoking a token that does not exist.
var ErrNoToken = errors.New("no such join token")

// Tokens lists the join tokens, newest first.
func (c *CA) Tokens(ctx context.Context) ([]TokenInfo, error) {
	resp, err := c.cli.Get(ctx, c.keys.tokens(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("listing join tokens: %w", err)
	}
	out := make([]TokenInfo, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var st storedToken
		if json.Unmarshal(kv.Value, &st) == nil {
			out = append(out, st.TokenInfo)
		}
	}
	slices.SortFunc(out, func(a, b TokenInfo) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return out, nil
}
