package herd

// CACertificate is a CA certificate registered with the hub for X.509
// device authentication (GET /certificates/{name}). Its shape is that of
// Azure's management-plane CertificateDescription (Azure registers CA
// certificates through Azure Resource Manager, not the IoT Hub REST API),
// without the ARM resource id and type; times are Azure IoT Hub's ISO 8601.
type CACertificate struct {
	Name       string                  `json:"name"`
	ETag       string                  `json:"etag"`
	Properties CACertificateProperties `json:"properties"`
}

// CACertificateProperties describe a registered CA certificate.
type CACertificateProperties struct {
	// Subject is the certificate's distinguished name.
	Subject string `json:"subject"`
	// Expiry is the end of its validity (NotAfter).
	Expiry Time `json:"expiry"`
	// Thumbprint is the upper-case hex SHA-1 digest of its DER encoding,
	// as Azure shows it; ThumbprintSHA256 the SHA-256 digest.
	Thumbprint       string `json:"thumbprint"`
	ThumbprintSHA256 string `json:"thumbprintSha256"`
	// IsVerified says its owner proved possession of its private key;
	// only verified CA certificates authenticate devices.
	IsVerified bool `json:"isVerified"`
	Created    Time `json:"created"`
	Updated    Time `json:"updated"`
	// Certificate is the certificate in PEM. In a PUT body it may also be
	// base64 DER (the content of a .cer file).
	Certificate string `json:"certificate"`
	// VerificationCode, shown while the certificate is unverified, is the
	// common name of the certificate its owner signs with the CA's key to
	// prove possession (POST /certificates/{name}/verify).
	VerificationCode string `json:"verificationCode,omitempty"`
}

// CACertificateList is the body of GET /certificates.
type CACertificateList struct {
	Value []CACertificate `json:"value"`
}

// CACertificateProof is the body of POST /certificates/{name}/verify: a
// certificate (PEM or base64 DER) whose common name is the verification
// code, signed by the CA's private key.
type CACertificateProof struct {
	Certificate string `json:"certificate"`
}
