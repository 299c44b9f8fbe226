package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/certs"
	"github.com/herd-iot/herd/service"
)

// caCommand is herd ca: the CA certificates that authenticate devices
// registered with --x509-ca.
func caCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := group(&cobra.Command{
		Use:   "ca",
		Short: "Manage the CA certificates that authenticate X.509 devices",
		Long: `Manage the CA certificates registered with the hub. A device registered with
herd device create --x509-ca authenticates with a certificate whose common
name is its id and whose chain ends at a registered CA certificate that is
verified: its owner proved possession of the CA's private key by signing a
certificate whose common name is the verification code the hub chose.

  herd ca add NAME ca.pem                  register (unverified); prints the code
  herd ca verify NAME proof.pem            prove possession with a signed certificate
  herd ca verify NAME --key ca-key.pem     or let herd sign the proof with the key

herd ca add local herd-data/ca.pem registers the hub's own local CA and
verifies it at once (the data folder holds its key): herd cert device
issues device certificates from it.

Azure registers CA certificates through Azure Resource Manager; Herd does it
through its own REST API (/certificates), which these commands call.`,
	})
	cf.register(cmd)

	var addKey string
	addCmd := &cobra.Command{
		Use:   "add NAME CERT.pem [--key KEY.pem]",
		Short: "Register a CA certificate; with its key (or the data folder's own CA) verify it at once",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, path := args[0], args[1]
			pemText, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			signer, err := proofSigner(cf.data, pemText, addKey)
			if err != nil {
				return err
			}
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			ca, err := c.CreateCACertificate(cmd.Context(), name, pemText)
			if err != nil {
				return err
			}
			if signer != nil {
				if ca, err = proveCA(cmd.Context(), c, ca, signer); err != nil {
					return err
				}
			}
			return printCA(e, &cf, ca)
		},
	}
	addCmd.Flags().StringVar(&addKey, "key", "", "the CA's private key (PEM): prove possession at once")

	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List the registered CA certificates",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			cas, err := c.ListCACertificates(cmd.Context())
			if err != nil {
				return err
			}
			if cf.output == "json" {
				return printJSON(e, cas)
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tVERIFIED\tSUBJECT\tEXPIRES\tTHUMBPRINT (SHA-1)")
			for _, ca := range cas {
				p := ca.Properties
				fmt.Fprintf(w, "%s\t%t\t%s\t%s\t%s\n", ca.Name, p.IsVerified, p.Subject, p.Expiry.Format(time.DateOnly), p.Thumbprint)
			}
			return w.Flush()
		},
	}

	showCmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a CA certificate (and, while unverified, its verification code)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			ca, err := c.GetCACertificate(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printCA(e, &cf, ca)
		},
	}

	codeCmd := &cobra.Command{
		Use:   "verification-code NAME",
		Short: "Give a CA certificate a new verification code and show how to sign it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			ca, err := c.GenerateVerificationCode(cmd.Context(), args[0], "")
			if err != nil {
				return err
			}
			return printCA(e, &cf, ca)
		},
	}

	var verifyKey string
	verifyCmd := &cobra.Command{
		Use:   "verify NAME (PROOF.pem | --key KEY.pem)",
		Short: "Prove possession of a CA certificate's key, which lets it authenticate devices",
		Long: `Prove possession of a CA certificate's private key: give a certificate whose
common name is the verification code (herd ca show NAME) signed by the CA's
key, or give the key with --key and herd signs one.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 2) == (verifyKey != "") {
				return fmt.Errorf("give either a signed certificate (PROOF.pem) or the CA's key (--key)")
			}
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			ca, err := c.GetCACertificate(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if len(args) == 2 {
				proof, err := os.ReadFile(args[1])
				if err != nil {
					return err
				}
				if ca, err = c.VerifyCACertificate(cmd.Context(), ca.Name, proof, ca.ETag); err != nil {
					return err
				}
				return printCA(e, &cf, ca)
			}
			signer, err := proofSigner(cf.data, []byte(ca.Properties.Certificate), verifyKey)
			if err != nil {
				return err
			}
			if ca, err = proveCA(cmd.Context(), c, ca, signer); err != nil {
				return err
			}
			return printCA(e, &cf, ca)
		},
	}
	verifyCmd.Flags().StringVar(&verifyKey, "key", "", "the CA's private key (PEM): herd signs the proof")

	deleteCmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Remove a CA certificate (devices connected through it are disconnected)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			if err := c.DeleteCACertificate(cmd.Context(), args[0], ""); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "deleted CA certificate %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(addCmd, listCmd, showCmd, codeCmd, verifyCmd, deleteCmd)
	return cmd
}

// proofSigner returns the issuer that can sign a proof of possession for
// the CA certificate pemText: the one its key file makes, or the data
// folder's local CA when pemText is that CA (the hub holds its key); nil
// when there is no key.
func proofSigner(dataDir string, pemText []byte, keyFile string) (*certs.Issuer, error) {
	if keyFile != "" {
		key, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, err
		}
		iss, err := certs.LoadIssuer(pemText, key)
		if err != nil {
			return nil, fmt.Errorf("--key %s: %w", keyFile, err)
		}
		return iss, nil
	}
	cert, err := certs.ParseCertificate(pemText)
	if err != nil {
		return nil, err
	}
	if local, err := certs.LocalIssuer(dataDir); err == nil && bytes.Equal(local.Cert.Raw, cert.Raw) {
		return local, nil
	}
	return nil, nil
}

// proveCA signs the CA's verification code with its key and sends the
// proof.
func proveCA(ctx context.Context, c *service.Client, ca *herd.CACertificate, signer *certs.Issuer) (*herd.CACertificate, error) {
	if ca.Properties.IsVerified {
		return ca, nil
	}
	proof, err := signer.Issue(certs.Spec{CommonName: ca.Properties.VerificationCode, Validity: 2 * time.Hour})
	if err != nil {
		return nil, err
	}
	return c.VerifyCACertificate(ctx, ca.Name, proof.CertPEM, ca.ETag)
}

// printCA shows a CA certificate; while it is unverified, with its
// verification code and how to prove possession.
func printCA(e *env, cf *clientFlags, ca *herd.CACertificate) error {
	if cf.output == "json" {
		return printJSON(e, ca)
	}
	p := ca.Properties
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "name\t%s\n", ca.Name)
	fmt.Fprintf(w, "subject\t%s\n", p.Subject)
	fmt.Fprintf(w, "expires\t%s\n", p.Expiry)
	fmt.Fprintf(w, "thumbprint\t%s (SHA-1)\n", p.Thumbprint)
	fmt.Fprintf(w, "\t%s (SHA-256)\n", p.ThumbprintSHA256)
	fmt.Fprintf(w, "verified\t%t\n", p.IsVerified)
	if !p.IsVerified {
		fmt.Fprintf(w, "verification code\t%s\n", p.VerificationCode)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if p.IsVerified {
		fmt.Fprintf(e.stdout, "\nDevices registered with --x509-ca authenticate with certificates it issued (CN = device id).\n")
		return nil
	}
	fmt.Fprintf(e.stdout, `
Not verified yet: it authenticates no device until you prove you hold its key.
Sign a certificate whose common name is the verification code with the CA's
key and give it to herd ca verify, or let herd sign it:

  herd ca verify %[1]s --key ca-key.pem

With OpenSSL:

  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout verify-key.pem -subj "/CN=%[2]s" -out verify.csr
  openssl x509 -req -in verify.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 1 -out verify.pem
  herd ca verify %[1]s verify.pem
`, ca.Name, p.VerificationCode)
	return nil
}

// certCommand is herd cert: certificates for trying X.509 devices.
func certCommand(e *env) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "cert",
		Short: "Issue X.509 device certificates for trying certificate authentication",
	})
	var data, out, start string
	var days int
	var self bool
	deviceCmd := &cobra.Command{
		Use:   "device ID [--days N] [--out DIR] [--self-signed]",
		Short: "Issue a device certificate and key (CN = ID) from the data folder's local CA",
		Long: `Issue a certificate and private key for device ID, with common name ID, for
TLS client authentication, signed by the local CA in the data folder (the
one herd serve created) or, with --self-signed, by its own key. It writes
DIR/ID.pem and DIR/ID-key.pem and prints the certificate's thumbprints.

A CA-signed certificate authenticates a device registered with
herd device create ID --x509-ca once the local CA is registered
(herd ca add local DATA/ca.pem); a self-signed one a device registered with
herd device create ID --x509-thumbprint THUMBPRINT.

--start and --days set its validity (an expired certificate for a test:
--start 2020-01-01T00:00:00Z --days 1).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := bindEnv(cmd, e.lookupEnv); err != nil {
				return err
			}
			id := args[0]
			if days < 1 {
				return fmt.Errorf("--days %d: give at least 1", days)
			}
			spec := certs.Spec{CommonName: id, Validity: time.Duration(days) * 24 * time.Hour}
			if start != "" {
				t, err := time.Parse(time.RFC3339, start)
				if err != nil {
					return fmt.Errorf("--start %q: use RFC 3339, such as 2026-01-02T15:04:05Z", start)
				}
				spec.NotBefore = t
			}
			var (
				iss *certs.Issued
				err error
			)
			if self {
				iss, err = certs.SelfSigned(spec)
			} else {
				var ca *certs.Issuer
				if ca, err = certs.LocalIssuer(data); err != nil {
					return err
				}
				iss, err = ca.Issue(spec)
			}
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			certPath, keyPath := filepath.Join(out, id+".pem"), filepath.Join(out, id+"-key.pem")
			if err := os.WriteFile(keyPath, iss.KeyPEM, 0o600); err != nil {
				return err
			}
			if err := os.WriteFile(certPath, iss.CertPEM, 0o644); err != nil {
				return err
			}
			sha1Hex, sha256Hex := certs.Thumbprints(iss.Cert)
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "certificate\t%s\n", certPath)
			fmt.Fprintf(w, "key\t%s\n", keyPath)
			fmt.Fprintf(w, "subject\t%s\n", iss.Cert.Subject)
			fmt.Fprintf(w, "issuer\t%s\n", iss.Cert.Issuer)
			fmt.Fprintf(w, "valid\t%s to %s\n", iss.Cert.NotBefore.UTC().Format(time.RFC3339), iss.Cert.NotAfter.UTC().Format(time.RFC3339))
			fmt.Fprintf(w, "thumbprint\t%s (SHA-1)\n", sha1Hex)
			fmt.Fprintf(w, "\t%s (SHA-256)\n", sha256Hex)
			if err := w.Flush(); err != nil {
				return err
			}
			if self {
				fmt.Fprintf(e.stdout, "\nRegister the device with: herd device create %s --x509-thumbprint %s\n", id, sha1Hex)
			} else {
				fmt.Fprintf(e.stdout, "\nRegister the device with: herd device create %s --x509-ca\n"+
					"(and the local CA once with: herd ca add local %s)\n", id, filepath.Join(data, certs.CAFile))
			}
			return nil
		},
	}
	f := deviceCmd.Flags()
	f.StringVar(&data, "data", "herd-data", "data folder whose local CA signs the certificate")
	f.StringVar(&out, "out", ".", "folder to write ID.pem and ID-key.pem to")
	f.IntVar(&days, "days", 365, "days the certificate is valid")
	f.StringVar(&start, "start", "", "when its validity starts (RFC 3339; default an hour ago)")
	f.BoolVar(&self, "self-signed", false, "sign it with its own key instead of the local CA (for --x509-thumbprint devices)")
	cmd.AddCommand(deviceCmd)
	return cmd
}
