// consumer is the test node's stand-in for an application using a tcred Secret: every few seconds
// it loads the credential the way Huawei's SDKs do and makes a signed GetCallerIdentity call
// (SDK-HMAC-SHA256, with X-Security-Token) to the STS endpoint in TCRED_STS_URL.
//
//	consumer file   credential from the INI file in HUAWEICLOUD_SDK_CREDENTIALS_FILE ([basic])
//	consumer env    credential from HUAWEICLOUD_SDK_AK / _SK / _SECURITY_TOKEN (envFrom)
//
// Each attempt prints one JSON line: {"ak", "status", "principal"} (or "error"). The access key id
// is the public half; the secret key and the token are never printed.
package main

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type credential struct{ ak, sk, token string }

type report struct {
	AK        string `json:"ak,omitempty"`
	Status    int    `json:"status,omitempty"`
	Principal string `json:"principal,omitempty"`
	Error     string `json:"error,omitempty"`
}

func main() {
	if len(os.Args) != 2 || (os.Args[1] != "file" && os.Args[1] != "env") {
		fmt.Fprintln(os.Stderr, "usage: consumer file|env")
		os.Exit(2)
	}
	interval := 2 * time.Second
	if d, err := time.ParseDuration(os.Getenv("CONSUMER_INTERVAL")); err == nil && d > 0 {
		interval = d
	}
	// PID 1 in its container: without a handler SIGTERM would be ignored until the kill.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-stop; os.Exit(0) }()
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		out, _ := json.Marshal(once(client, os.Args[1]))
		fmt.Println(string(out))
		time.Sleep(interval)
	}
}

func once(client *http.Client, mode string) report {
	cred, err := load(mode)
	if err != nil {
		return report{Error: err.Error()}
	}
	r := report{AK: cred.ak}
	status, principal, err := callerIdentity(client, os.Getenv("TCRED_STS_URL"), cred, time.Now())
	r.Status, r.Principal = status, principal
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

func load(mode string) (credential, error) {
	if mode == "env" {
		c := credential{os.Getenv("HUAWEICLOUD_SDK_AK"), os.Getenv("HUAWEICLOUD_SDK_SK"), os.Getenv("HUAWEICLOUD_SDK_SECURITY_TOKEN")}
		if c.ak == "" || c.sk == "" {
			return c, errors.New("HUAWEICLOUD_SDK_AK/SK not set")
		}
		return c, nil
	}
	f, err := os.Open(os.Getenv("HUAWEICLOUD_SDK_CREDENTIALS_FILE"))
	if err != nil {
		return credential{}, err
	}
	defer f.Close()
	return parseINI(f)
}

// parseINI reads ak, sk and security_token from the [basic] section.
func parseINI(r io.Reader) (credential, error) {
	var c credential
	section := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = strings.ToLower(strings.Trim(line, "[]"))
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section != "basic" {
			continue
		}
		switch strings.TrimSpace(k) {
		case "ak":
			c.ak = strings.TrimSpace(v)
		case "sk":
			c.sk = strings.TrimSpace(v)
		case "security_token":
			c.token = strings.TrimSpace(v)
		}
	}
	if c.ak == "" || c.sk == "" {
		return c, errors.New("no ak/sk in [basic]")
	}
	return c, sc.Err()
}

// callerIdentity signs GET /v5/caller-identity and returns the HTTP status and principal_urn.
func callerIdentity(client *http.Client, sts string, c credential, now time.Time) (int, string, error) {
	base, err := url.Parse(sts)
	if err != nil || base.Host == "" {
		return 0, "", fmt.Errorf("bad TCRED_STS_URL %q", sts)
	}
	const path = "/v5/caller-identity"
	date := now.UTC().Format("20060102T150405Z")
	headers := [][2]string{{"host", base.Host}, {"x-sdk-date", date}}
	if c.token != "" {
		headers = append(headers, [2]string{"x-security-token", c.token})
	}
	var canonical, names strings.Builder
	for i, h := range headers { // already in sorted order
		canonical.WriteString(h[0] + ":" + h[1] + "\n")
		if i > 0 {
			names.WriteString(";")
		}
		names.WriteString(h[0])
	}
	empty := sha256.Sum256(nil)
	request := strings.Join([]string{"GET", path + "/", "", canonical.String(), names.String(), hex.EncodeToString(empty[:])}, "\n")
	digest := sha256.Sum256([]byte(request))
	mac := hmac.New(sha256.New, []byte(c.sk))
	mac.Write([]byte("SDK-HMAC-SHA256\n" + date + "\n" + hex.EncodeToString(digest[:])))
	req, err := http.NewRequest(http.MethodGet, strings.TrimSuffix(sts, "/")+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("X-Sdk-Date", date)
	if c.token != "" {
		req.Header.Set("X-Security-Token", c.token)
	}
	req.Header.Set("Authorization", fmt.Sprintf("SDK-HMAC-SHA256 Access=%s, SignedHeaders=%s, Signature=%s",
		c.ak, names.String(), hex.EncodeToString(mac.Sum(nil))))
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var body struct {
		PrincipalURN string `json:"principal_urn"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body); err != nil {
		return resp.StatusCode, "", errors.New("unreadable answer")
	}
	return resp.StatusCode, body.PrincipalURN, nil
}
