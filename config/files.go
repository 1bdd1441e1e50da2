package config

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"strings"
)

// CheckFiles reads the files the configuration names, as the proxy does
// when it starts, and reports each that the proxy would refuse: a
// certificate or key file that is missing or does not parse, a certificate
// that does not match its key, a CA file without a certificate, and a
// plugin module that is missing or whose digest is not its sha256. Paths
// are taken as written, relative to the working directory.
//
// Validate does not read files, because a configuration is often checked
// away from the proxies that will run it (by the control plane, say);
// CheckFiles is for where it will run. The error, when not nil, is an
// Errors naming each field.
func (c *Config) CheckFiles() error {
	v := &errs{}
	for i, l := range c.Listeners {
		if l.TLS == nil {
			continue
		}
		p := dot(idx("listeners", i), "tls")
		for j, cf := range l.TLS.Certificates {
			if cf.Certificate == "" {
				checkKeyPairFiles(v, idx(dot(p, "certificates"), j), cf.CertFile, cf.KeyFile)
			}
		}
		checkCAFile(v, dot(p, "client_ca_file"), l.TLS.ClientCAFile)
	}
	for i, cl := range c.Clusters {
		if cl.TLS == nil {
			continue
		}
		p := dot(idx("clusters", i), "tls")
		checkCAFile(v, dot(p, "ca_file"), cl.TLS.CAFile)
		checkKeyPairFiles(v, p, cl.TLS.CertFile, cl.TLS.KeyFile)
	}
	for i, pl := range c.Plugins {
		checkModuleFile(v, idx("plugins", i), pl.File, pl.SHA256)
	}
	return v.err()
}

// checkKeyPairFiles checks the certificate and key files at p.cert_file
// and p.key_file. Empty names are Validate's to report.
func checkKeyPairFiles(v *errs, p, certFile, keyFile string) {
	if certFile == "" || keyFile == "" {
		return
	}
	certOK := checkReadable(v, dot(p, "cert_file"), certFile)
	keyOK := checkReadable(v, dot(p, "key_file"), keyFile)
	if !certOK || !keyOK {
		return
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		v.add(p, "cert_file and key_file are not a key pair: %s", strings.TrimPrefix(err.Error(), "tls: "))
	}
}

func checkCAFile(v *errs, p, file string) {
	if file == "" || !checkReadable(v, p, file) {
		return
	}
	b, err := os.ReadFile(file)
	if err != nil {
		v.add(p, "%s", fileError(file, err))
		return
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		v.add(p, "%s holds no PEM certificate", file)
	}
}

func checkModuleFile(v *errs, p, file, sum string) {
	if file == "" || !checkReadable(v, dot(p, "file"), file) {
		return
	}
	if sum == "" {
		return
	}
	b, err := os.ReadFile(file)
	if err != nil {
		v.add(dot(p, "file"), "%s", fileError(file, err))
		return
	}
	d := sha256.Sum256(b)
	if got := hex.EncodeToString(d[:]); got != sum {
		v.add(dot(p, "sha256"), "%s has digest %s, not this one", file, got)
	}
}

// checkReadable reports whether file is a regular file that can be
// opened, and otherwise adds why not.
func checkReadable(v *errs, p, file string) bool {
	f, err := os.Open(file)
	if err != nil {
		v.add(p, "%s", fileError(file, err))
		return false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		v.add(p, "%s", fileError(file, err))
		return false
	}
	if !st.Mode().IsRegular() {
		v.add(p, "%s is not a regular file", file)
		return false
	}
	return true
}

// fileError says why a file cannot be read, in fewer words than
// *fs.PathError.
func fileError(file string, err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return file + ": no such file"
	case errors.Is(err, fs.ErrPermission):
		return file + ": permission denied"
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return file + ": " + pe.Err.Error()
	}
	return err.Error()
}
