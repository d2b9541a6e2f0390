// Command consumer-go is a long-lived program that uses Huawei's official Go SDK
// (github.com/huaweicloud/huaweicloud-sdk-go-v3, pinned in go.mod) the way an application in a pod
// does, and proves that credentials served by tcred keep working across rotations.
//
// Every --interval it makes one signed STS GetCallerIdentity call (GET /v5/caller-identity) and
// prints one JSON line: {"ok":bool,"call":n,"accessKeyId":"<public AK id>","error":"…"}. The secret
// key and the security token are never printed. After --max-failures failed calls it exits 1; after
// --calls calls (0 = forever) it exits 0.
//
// Modes:
//
//	--mode pod-identity  ONE client for the whole process, its credentials from the SDK's pod
//	                     identity provider (HC_CONTAINER_CREDENTIALS_FULL_URI and
//	                     HC_CONTAINER_AUTHORIZATION_TOKEN_FILE). The SDK fetches again by itself
//	                     when less than 40 minutes of validity remain. The provider is chosen
//	                     explicitly: the Go SDK's default chain (used when a client is built without
//	                     credentials) is env → profile → metadata → profile again, and has no pod
//	                     identity provider (checked in v0.1.207).
//	--mode file          the tcred credentials file (INI, section [basic]) named by
//	                     --credentials-file or HUAWEICLOUD_SDK_CREDENTIALS_FILE, read with the SDK's
//	                     profile provider; the SDK never re-reads it, so this program rebuilds its
//	                     client when the file's content changes (a Secret volume swaps it on rotation).
package main

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/auth"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/auth/provider"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/config"
	sts "github.com/huaweicloud/huaweicloud-sdk-go-v3/services/sts/v1"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/services/sts/v1/model"
)

const credentialsFileEnv = "HUAWEICLOUD_SDK_CREDENTIALS_FILE"

// maxErrorLen bounds an error message in the output (an SDK error can quote a whole response body).
const maxErrorLen = 300

type options struct {
	mode            string
	endpoint        string
	credentialsFile string
	interval        time.Duration
	timeout         time.Duration
	maxFailures     int
	calls           int
}

// line is what is printed after each call.
type line struct {
	OK           bool   `json:"ok"`
	Call         int    `json:"call"`
	Time         string `json:"time"`
	AccessKeyID  string `json:"accessKeyId,omitempty"`
	PrincipalURN string `json:"principalUrn,omitempty"`
	Error        string `json:"error,omitempty"`
}

// consumer holds the one client (and, in file mode, the content hash it was built from).
type consumer struct {
	opts     options
	client   *sts.StsClient
	creds    *auth.BasicCredentials
	fileHash [32]byte
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer-go:", err)
		os.Exit(2)
	}
	os.Exit(run(opts))
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("consumer-go", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.mode, "mode", "pod-identity", "pod-identity | file")
	fs.StringVar(&o.endpoint, "endpoint", os.Getenv("TCRED_CONSUMER_STS_ENDPOINT"),
		"STS endpoint URL, e.g. https://sts.ap-southeast-1.myhuaweicloud.com (default $TCRED_CONSUMER_STS_ENDPOINT)")
	fs.StringVar(&o.credentialsFile, "credentials-file", os.Getenv(credentialsFileEnv),
		"file mode: the tcred credentials file (default $"+credentialsFileEnv+")")
	fs.DurationVar(&o.interval, "interval", 10*time.Second, "time between calls")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "HTTP timeout of one STS call")
	fs.IntVar(&o.maxFailures, "max-failures", 3, "exit 1 after this many failed calls (in total)")
	fs.IntVar(&o.calls, "calls", 0, "exit 0 after this many calls (0 = run forever)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.mode != "pod-identity" && o.mode != "file":
		return o, fmt.Errorf("--mode must be pod-identity or file, not %q", o.mode)
	case o.endpoint == "":
		return o, errors.New("--endpoint (or $TCRED_CONSUMER_STS_ENDPOINT) is required")
	case o.mode == "file" && o.credentialsFile == "":
		return o, errors.New("file mode needs --credentials-file or $" + credentialsFileEnv)
	case o.maxFailures < 1 || o.calls < 0 || o.interval < 0:
		return o, errors.New("--max-failures must be ≥ 1, --calls and --interval ≥ 0")
	}
	return o, nil
}

func run(opts options) int {
	c := &consumer{opts: opts}
	out := json.NewEncoder(os.Stdout)
	failures := 0
	for call := 1; opts.calls == 0 || call <= opts.calls; call++ {
		if call > 1 {
			time.Sleep(opts.interval)
		}
		l := c.callOnce()
		l.Call = call
		l.Time = time.Now().UTC().Format(time.RFC3339Nano)
		_ = out.Encode(l)
		if !l.OK {
			failures++
			if failures >= opts.maxFailures {
				fmt.Fprintf(os.Stderr, "consumer-go: %d failed calls, giving up\n", failures)
				return 1
			}
		}
	}
	return 0
}

// callOnce makes sure a client exists (building or, in file mode, rebuilding it) and makes one call.
func (c *consumer) callOnce() line {
	if err := c.ensureClient(); err != nil {
		return line{Error: c.scrub(err.Error())}
	}
	resp, err := c.client.GetCallerIdentity(&model.GetCallerIdentityRequest{})
	// The SDK refreshes the credential (pod-identity mode) before signing, so its AK now is the one
	// that signed this call.
	l := line{AccessKeyID: c.creds.AK}
	if err != nil {
		l.Error = c.scrub(err.Error())
		return l
	}
	l.OK = true
	if resp.PrincipalUrn != nil {
		l.PrincipalURN = *resp.PrincipalUrn
	}
	return l
}

func (c *consumer) ensureClient() error {
	switch c.opts.mode {
	case "pod-identity":
		if c.client != nil {
			return nil // one client for the process lifetime; the SDK refreshes its credential
		}
		// Chosen explicitly: the SDK's default chain does not include pod identity.
		return c.build(provider.BasicCredentialPodIdentityProvider())
	default:
		content, err := os.ReadFile(c.opts.credentialsFile)
		if err != nil {
			return fmt.Errorf("reading the credentials file: %w", err)
		}
		hash := sha256.Sum256(content)
		if c.client != nil && hash == c.fileHash {
			return nil
		}
		// The SDK's profile provider reads the file named by this variable.
		if err := os.Setenv(credentialsFileEnv, c.opts.credentialsFile); err != nil {
			return err
		}
		if err := c.build(provider.BasicCredentialProfileProvider()); err != nil {
			return err
		}
		c.fileHash = hash
		return nil
	}
}

// build makes the client with the credentials of p, never with the SDK's default chain (which
// has no pod identity provider and would ask the ECS metadata service).
func (c *consumer) build(p provider.ICredentialProvider) error {
	cred, err := p.GetCredentials()
	if err != nil {
		return fmt.Errorf("loading credentials: %w", err)
	}
	httpConfig := config.DefaultHttpConfig().WithTimeout(c.opts.timeout).WithRetries(0)
	hc, err := sts.StsClientBuilder().
		WithEndpoints([]string{c.opts.endpoint}).
		WithHttpConfig(httpConfig).
		WithCredential(cred).
		SafeBuild()
	if err != nil {
		return fmt.Errorf("building the STS client: %w", err)
	}
	basic, ok := hc.GetCredential().(*auth.BasicCredentials)
	if !ok {
		return fmt.Errorf("the client holds %T, not basic credentials", hc.GetCredential())
	}
	c.client = sts.NewStsClient(hc)
	c.creds = basic
	return nil
}

// scrub bounds an error message and removes the secret key and security token should an error
// ever quote them.
func (c *consumer) scrub(msg string) string {
	if c.creds != nil {
		for _, secret := range []string{c.creds.SK, c.creds.SecurityToken} {
			if secret != "" {
				msg = strings.ReplaceAll(msg, secret, "<redacted>")
			}
		}
	}
	if len(msg) > maxErrorLen {
		msg = msg[:maxErrorLen] + "…"
	}
	return msg
}
