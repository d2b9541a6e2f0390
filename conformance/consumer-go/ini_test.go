package main

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/auth/basic"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/auth/global"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/auth/provider"
)

// testdata/tcred-credentials.ini is the INI file tcred writes (the `credentials` key of its
// Secret); a unit test in src/controller/credentials/formats.rs renders it and compares it with this
// file byte for byte, so the two cannot drift.
const tcredIni = "testdata/tcred-credentials.ini"

// implicitType is the section a client built without credentials reads: the default chain's
// profile provider is given the builder's CredentialsType[0], lower-cased.
func implicitType(t *testing.T) string {
	types := core.NewHcHttpClientBuilder().CredentialsType
	if len(types) == 0 || types[0] != "basic.Credentials" {
		t.Fatalf("the Go SDK's default credentials type changed: %v", types)
	}
	return types[0]
}

func withFile(t *testing.T, content []byte) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(file, content, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(credentialsFileEnv, file)
	for _, k := range []string{"HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", "HUAWEICLOUD_SDK_SECURITY_TOKEN",
		"HUAWEICLOUD_SDK_PROJECT_ID", "HUAWEICLOUD_SDK_DOMAIN_ID"} {
		t.Setenv(k, "")
	}
}

// dropSection removes one [name] section from an INI text.
func dropSection(content []byte, name string) []byte {
	re := regexp.MustCompile(`(?ms)^\[` + regexp.QuoteMeta(name) + `\]\n.*?(\n\n|\z)`)
	return re.ReplaceAll(content, nil)
}

// The implicit chain of a Go client reads section [basic.credentials]; tcred writes it, with the
// project id, so the client neither falls back to [basic] nor looks the project up at IAM. The same
// holds for [global.credentials] and the domain id.
func TestImplicitChainReadsTheSectionsTcredWrites(t *testing.T) {
	content, err := os.ReadFile(tcredIni)
	if err != nil {
		t.Fatal(err)
	}
	// Without [basic] and [global], nothing can come from ini.v1's child-section fallback.
	withFile(t, dropSection(dropSection(content, "basic"), "global"))
	cred, err := provider.NewProfileCredentialProvider(implicitType(t)).GetCredentials()
	if err != nil {
		t.Fatalf("implicit profile provider: %v", err)
	}
	b, ok := cred.(*basic.Credentials)
	if !ok {
		t.Fatalf("got %T", cred)
	}
	if b.AK != "AKIDTCREDGOLDEN00001" || b.SK != "SKgolden/secret+key=" || b.SecurityToken != "token-golden-1" ||
		b.ProjectId != "proj-golden-1" {
		t.Fatalf("basic.credentials: ak=%q project=%q token set=%v", b.AK, b.ProjectId, b.SecurityToken != "")
	}
	gcred, err := provider.NewProfileCredentialProvider("global.Credentials").GetCredentials()
	if err != nil {
		t.Fatalf("global profile provider: %v", err)
	}
	g, ok := gcred.(*global.Credentials)
	if !ok || g.AK != "AKIDTCREDGOLDEN00001" || g.DomainId != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("global.credentials: %T %+v", gcred, g != nil)
	}
	// And the check has teeth: with no basic section at all the provider finds nothing.
	withFile(t, dropSection(dropSection(dropSection(content, "basic"), "basic.credentials"), "basiccredentials"))
	if c, err := provider.NewProfileCredentialProvider(implicitType(t)).GetCredentials(); err == nil {
		t.Fatalf("no basic section, yet the provider loaded %T", c)
	}
	withFile(t, dropSection(dropSection(content, "basic"), "global"))
	// The whole default chain, as a client built without credentials runs it.
	chained, err := provider.DefaultCredentialProviderChain(implicitType(t)).GetCredentials()
	if err != nil || chained.(*basic.Credentials).ProjectId != "proj-golden-1" {
		t.Fatalf("default chain: %v", err)
	}
}

// A file with only [basic] (what tcred wrote before) is read by the implicit chain only through
// gopkg.in/ini.v1's fallback from child section "basic.credentials" to its parent "basic". This
// pins that behaviour, which older Secrets rely on until tcred rewrites them.
func TestImplicitChainFallsBackToBasicForOlderFiles(t *testing.T) {
	content, err := os.ReadFile(tcredIni)
	if err != nil {
		t.Fatal(err)
	}
	withFile(t, dropSection(dropSection(content, "basic.credentials"), "basiccredentials"))
	cred, err := provider.NewProfileCredentialProvider(implicitType(t)).GetCredentials()
	if err != nil {
		t.Fatalf("fallback to [basic]: %v", err)
	}
	if cred.(*basic.Credentials).AK != "AKIDTCREDGOLDEN00001" {
		t.Fatal("fallback read another AK")
	}
}
