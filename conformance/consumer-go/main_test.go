package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/auth/provider"
)

// chainTypes lists the provider types of a chain (its slice is unexported; reflection reads types only).
func chainTypes(chain *provider.CredentialProviderChain) []string {
	providers := reflect.ValueOf(chain).Elem().FieldByName("providers")
	var types []string
	for i := 0; i < providers.Len(); i++ {
		types = append(types, providers.Index(i).Elem().Type().String())
	}
	return types
}

// The README tells Go programs to choose the pod identity provider explicitly because the SDK's
// default chain (what a client built without credentials uses) has none. If a new SDK release fixes
// that, this test fails: update the README's caveat.
func TestDefaultChainOmitsPodIdentity(t *testing.T) {
	def := chainTypes(provider.DefaultCredentialProviderChain("basic.Credentials"))
	want := []string{"*provider.EnvCredentialProvider", "*provider.ProfileCredentialProvider",
		"*provider.MetadataCredentialProvider", "*provider.ProfileCredentialProvider"}
	if !reflect.DeepEqual(def, want) {
		t.Fatalf("default chain is %v, want %v", def, want)
	}
	basic := chainTypes(provider.BasicCredentialProviderChain())
	if !strings.Contains(strings.Join(basic, ","), "PodIdentityCredentialProvider") {
		t.Fatalf("BasicCredentialProviderChain has no pod identity provider: %v", basic)
	}
}

func TestFlags(t *testing.T) {
	t.Setenv("TCRED_CONSUMER_STS_ENDPOINT", "")
	t.Setenv(credentialsFileEnv, "")
	for _, bad := range [][]string{
		{"--mode", "nope", "--endpoint", "http://x"},
		{"--mode", "pod-identity"},
		{"--mode", "file", "--endpoint", "http://x"},
		{"--endpoint", "http://x", "--max-failures", "0"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%v) accepted", bad)
		}
	}
	o, err := parseFlags([]string{"--endpoint", "http://x", "--interval", "2s", "--calls", "5"})
	if err != nil || o.mode != "pod-identity" || o.calls != 5 || o.interval.Seconds() != 2 {
		t.Fatalf("parseFlags: %+v %v", o, err)
	}
}

// An error that quotes the secret key or the token is printed without them.
func TestScrubRemovesSecretsAndBoundsLength(t *testing.T) {
	c := &consumer{}
	dir := t.TempDir()
	file := filepath.Join(dir, "credentials")
	content := "[basic]\nak = AKID0000000000000001\nsk = SECRETSECRETSECRET\nsecurity_token = TOKENTOKENTOKEN\n"
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	c.opts = options{mode: "file", endpoint: "http://127.0.0.1:9", credentialsFile: file}
	if err := c.ensureClient(); err != nil {
		t.Fatal(err)
	}
	got := c.scrub("bad SECRETSECRETSECRET and TOKENTOKENTOKEN" + strings.Repeat("x", 500))
	if strings.Contains(got, "SECRET") || strings.Contains(got, "TOKENTOKEN") || len(got) > maxErrorLen+4 {
		t.Fatalf("scrub left secrets or length: %q", got)
	}
	if c.creds.AK != "AKID0000000000000001" {
		t.Fatalf("file mode loaded %q", c.creds.AK)
	}
}
