-- A pitstop schema-1 database written by pitstop 0.1.0 (core v1), for the migration test.
BEGIN TRANSACTION;
CREATE TABLE pitstop_checkpoints (
	run_id VARCHAR NOT NULL, 
	seq INTEGER NOT NULL, 
	parent_seq INTEGER, 
	created_at FLOAT NOT NULL, 
	"trigger" VARCHAR NOT NULL, 
	label VARCHAR, 
	node VARCHAR, 
	schema_version INTEGER NOT NULL, 
	serializer VARCHAR NOT NULL, 
	checksum VARCHAR NOT NULL, 
	size BIGINT NOT NULL, 
	nodes_written INTEGER NOT NULL, 
	metadata BLOB NOT NULL, 
	state BLOB, 
	PRIMARY KEY (run_id, seq)
);
INSERT INTO "pitstop_checkpoints" VALUES('etl',1,NULL,1.79562926095534563068e+09,'every_n_nodes',NULL,'a',1,'json','0cb97d4d5ab1fab5f13107e6600889f16551c81844dfd3c1edefe09d6f591a07',35,3,X'7B2276223A20317D',NULL);
INSERT INTO "pitstop_checkpoints" VALUES('etl',2,1,1.79562926096163058284e+09,'every_n_nodes',NULL,'b',1,'json','32842d4098a3030de9768067333f27bbf3a8a92d356a5223d873f2fab480daa8',35,1,X'7B2276223A20317D',NULL);
INSERT INTO "pitstop_checkpoints" VALUES('etl',3,2,1795629260.96543,'manual','mid-c',NULL,1,'json','99777e05988dac3f4c2cd7b5dfc7468708fab520fdf40c62b971517f0b77b98c',20,1,X'7B2276223A20317D',X'7B22637572736F72223A377D');
INSERT INTO "pitstop_checkpoints" VALUES('other',1,NULL,1.79562926097586846355e+09,'manual',NULL,NULL,1,'json','5de27ba9cbff3c2946de5d4e21cd0cab1ac3225cabad47836160a04ddd60350c',13,1,X'7B7D',NULL);
CREATE TABLE pitstop_node_states (
	run_id VARCHAR NOT NULL, 
	node_id VARCHAR NOT NULL, 
	seq INTEGER NOT NULL, 
	status VARCHAR NOT NULL, 
	attempt INTEGER NOT NULL, 
	error TEXT, 
	started_at FLOAT, 
	finished_at FLOAT, 
	deps TEXT NOT NULL, 
	serializer VARCHAR NOT NULL, 
	output BLOB, 
	checksum VARCHAR NOT NULL, 
	PRIMARY KEY (run_id, node_id, seq)
);
INSERT INTO "pitstop_node_states" VALUES('etl','a',1,'completed',1,NULL,1.79562926093119907384e+09,1.79562926093120169643e+09,'[]','json',X'7B226E6F6465223A2261222C22726F7773223A5B312C322C335D7D','311756cd71b30adc011d28bff3bcd788d43e87c7f8e22b905d0323b29e4811d0');
INSERT INTO "pitstop_node_states" VALUES('etl','b',1,'pending',0,NULL,NULL,NULL,'["a"]','json',NULL,'030d69485e99e3d2877e1efca1763171212576b84f4b2c37e2b6a8f923f4e916');
INSERT INTO "pitstop_node_states" VALUES('etl','c',1,'pending',0,NULL,NULL,NULL,'["b"]','json',NULL,'b22c80f43d0c66e613b5595bcbe94423b8671396bebb2749c919a4d8345a17b2');
INSERT INTO "pitstop_node_states" VALUES('etl','b',2,'completed',1,NULL,1.79562926096147799492e+09,1.79562926096148204801e+09,'["a"]','json',X'7B226E6F6465223A2262222C22726F7773223A5B312C322C335D7D','2335081b617caff07fbcdf69ffca130964e2257095dd047cb7575323cedb4ea2');
INSERT INTO "pitstop_node_states" VALUES('etl','c',3,'running',1,NULL,1.79562926096530795102e+09,NULL,'["b"]','json',NULL,'49cdf35924024e93fe4b963a7e6f1ad6aa9ac8ba0e2662cdcddb9ea0ecc620aa');
INSERT INTO "pitstop_node_states" VALUES('other','x',1,'completed',1,NULL,1700000000.25,1700000001.5,'[]','json',X'5B312E352C2274776F225D','01c49ce949ca3284eb67552a96c78db21fa48db331933db3ff947f9e55a6601a');
CREATE TABLE pitstop_schema (
	id INTEGER NOT NULL, 
	version INTEGER NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "pitstop_schema" VALUES(1,1);
CREATE INDEX ix_pitstop_node_states_run_seq ON pitstop_node_states (run_id, seq);
COMMIT;
