-- CA certificates registered for X.509 device authentication
-- (internal/certauth). thumbprint is the upper-case hex SHA-256 of the
-- certificate's DER; verification_code is NULL once the owner proved
-- possession of the CA's key (verified = 1). Times are TEXT in Azure's
-- layout, like the devices table's. Device thumbprints (selfSigned) live
-- in the devices table since migration 0001.
CREATE TABLE ca_certificates (
    name              TEXT PRIMARY KEY,
    certificate       TEXT NOT NULL,
    thumbprint        TEXT NOT NULL,
    verified          INTEGER NOT NULL,
    verification_code TEXT,
    created_time      TEXT NOT NULL,
    updated_time      TEXT NOT NULL,
    etag              INTEGER NOT NULL
);
