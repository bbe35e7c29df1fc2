-- A civil-servant (ASN) database in the style of BKN's (fictitious data). Runs on
-- SQLite and PostgreSQL alike.
CREATE TABLE instansi (
    kode TEXT PRIMARY KEY,
    nama TEXT NOT NULL
);

CREATE TABLE pegawai (
    -- Nomor Induk Pegawai: 18 digits.
    nip TEXT PRIMARY KEY,
    nik TEXT NOT NULL UNIQUE,
    nama TEXT NOT NULL,
    instansi TEXT NOT NULL REFERENCES instansi (kode),
    -- PNS or PPPK.
    jenis TEXT NOT NULL CHECK (jenis IN ('PNS', 'PPPK')),
    golongan TEXT NOT NULL,
    jabatan TEXT NOT NULL,
    -- AKTIF, CUTI, PENSIUN or BERHENTI.
    status TEXT NOT NULL CHECK (status IN ('AKTIF', 'CUTI', 'PENSIUN', 'BERHENTI')),
    tmt TEXT NOT NULL
);

INSERT INTO instansi (kode, nama) VALUES
    ('4011', 'Kementerian Sosial'),
    ('2021', 'Kementerian Dalam Negeri'),
    ('3171', 'Pemerintah Provinsi DKI Jakarta');

INSERT INTO pegawai (nip, nik, nama, instansi, jenis, golongan, jabatan, status, tmt) VALUES
    ('198705232010012001', '3174012305870001', 'Siti Rahayu', '4011', 'PNS', 'III/c', 'Analis Kebijakan Ahli Muda', 'AKTIF', '2010-01-01'),
    ('199208172019031002', '3273015708920002', 'Budi Santoso', '2021', 'PNS', 'III/a', 'Pranata Komputer Ahli Pertama', 'AKTIF', '2019-03-01'),
    ('196501121990031001', '5171011201650003', 'I Made Sudarma', '3171', 'PNS', 'IV/a', 'Kepala Seksi', 'PENSIUN', '1990-03-01'),
    ('199512302022212001', '3174013012950004', 'Nur Aini', '4011', 'PPPK', 'IX', 'Penyuluh Sosial', 'AKTIF', '2022-12-01'),
    ('198911042014022003', '3174010411890005', 'Rina Kartika', '4011', 'PNS', 'III/b', 'Pekerja Sosial Ahli Pertama', 'CUTI', '2014-02-01');
