"""How two nodes come to share the pair's material (esc.pairing.material) without
anything guessable published: a password-authenticated key exchange keyed by a
credential both were given (esc.pairing.credentials, esc.pairing.handshake), over the
pairing port (esc.pairing.service)."""
