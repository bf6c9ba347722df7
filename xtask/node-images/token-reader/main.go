// token-reader: a workload that uses its projected service-account token
// as an in-cluster client does. Every second it reads the token file afresh
// and presents the token to the API server, through the `kubernetes`
// Service, with an authenticated call (a SelfSubjectReview), and prints one
// line: the token's kid and issuer, the answer, and the counts so far.
//
//	presentation=N kid=KID iss=ISSUER status=201 accepted=A rejected=R unavailable=U
//
// 201 is accepted, 401 rejected; anything else (no answer while the API
// server restarts, say) is counted as unavailable. The token is never
// printed.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

const account = "/var/run/secrets/kubernetes.io/serviceaccount/"

func main() {
	tokenFile := env("TOKEN_FILE", account+"token")
	server := "https://" + net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))
	var accepted, rejected, unavailable uint64
	for n := uint64(1); ; n++ {
		kid, iss, status := present(server, tokenFile)
		switch status {
		case "201":
			accepted++
		case "401":
			rejected++
		default:
			unavailable++
		}
		fmt.Printf("presentation=%d kid=%s iss=%s status=%s accepted=%d rejected=%d unavailable=%d\n",
			n, kid, iss, status, accepted, rejected, unavailable)
		time.Sleep(time.Second)
	}
}

func env(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

// present reads the token file and the CA afresh and presents the token
// once; it returns the token's kid and issuer (unverified, for the log) and
// the HTTP status, or a word saying why there was none.
func present(server, tokenFile string) (kid, iss, status string) {
	kid, iss = "-", "-"
	raw, err := os.ReadFile(tokenFile)
	if err != nil {
		return kid, iss, "no-token-file"
	}
	token := strings.TrimSpace(string(raw))
	kid, iss = claims(token)
	ca, err := os.ReadFile(env("CA_FILE", account+"ca.crt"))
	if err != nil {
		return kid, iss, "no-ca-file"
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return kid, iss, "bad-ca-file"
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true},
	}
	body := `{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`
	request, err := http.NewRequest(http.MethodPost, server+"/apis/authentication.k8s.io/v1/selfsubjectreviews", strings.NewReader(body))
	if err != nil {
		return kid, iss, "bad-request"
	}
	request.Header.Set("Authorization", "Bearer "+token)
	request.Header.Set("Content-Type", "application/json")
	response, err := client.Do(request)
	if err != nil {
		return kid, iss, "unreachable"
	}
	defer response.Body.Close()
	_, _ = io.Copy(io.Discard, response.Body)
	return kid, iss, fmt.Sprint(response.StatusCode)
}

// claims returns the kid of a JWT's header and the iss of its payload,
// unverified ("-" when absent).
func claims(token string) (kid, iss string) {
	kid, iss = "-", "-"
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return kid, iss
	}
	var header struct {
		Kid string `json:"kid"`
	}
	var payload struct {
		Iss string `json:"iss"`
	}
	if decode(parts[0], &header) && header.Kid != "" {
		kid = header.Kid
	}
	if decode(parts[1], &payload) && payload.Iss != "" {
		iss = payload.Iss
	}
	return kid, iss
}

func decode(part string, into any) bool {
	raw, err := base64.RawURLEncoding.DecodeString(part)
	return err == nil && json.Unmarshal(raw, into) == nil
}
