-- CA certificates registered for X.509 device authentication
-- (internal/certauth), as in the SQLite store's migration 0040.
-- thumbprint is the upper-case hex SHA-256 of the certificate's DER;
-- verification_code is NULL once the owner proved possession of the CA's
-- key.
CREATE TABLE ca_certificates (
    name              text COLLATE "C" PRIMARY KEY,
    certificate       text NOT NULL,
    thumbprint        text NOT NULL,
    verified          boolean NOT NULL,
    verification_code text,
    created_time      text COLLATE "C" NOT NULL,
    updated_time      text COLLATE "C" NOT NULL,
    etag              bigint NOT NULL
);
