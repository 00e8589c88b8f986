-- Named queries of the installation's id (papayya/installation.py).

-- name: create
INSERT INTO installation (installation_id) VALUES ($1) ON CONFLICT (singleton) DO NOTHING;

-- name: get
SELECT installation_id FROM installation;
