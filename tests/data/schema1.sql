BEGIN TRANSACTION;
CREATE TABLE commits (
	origin VARCHAR(128) NOT NULL, 
	seq INTEGER NOT NULL, 
	hlc BIGINT NOT NULL, 
	user VARCHAR(128) NOT NULL, 
	at FLOAT NOT NULL, 
	comment TEXT NOT NULL, 
	context TEXT NOT NULL, 
	writes TEXT, 
	PRIMARY KEY (origin, seq)
);
INSERT INTO "commits" VALUES('SER-NY',1,117738346983849984,'clusterd',1.79654460119476842884e+09,'create cluster americas','{}','[["cluster","cluster","",{"id":"2980e3b6034818b8","name":"americas"},false],["groups","cluster","",{},false],["groups","cluster","Main_Group",{"name":"Main_Group"},true],["machines","cluster","",{},false],["machines","cluster","newyork.example.com",{"address":null,"ccs_port":null,"host_key":null,"machine_key":null,"serial":"SER-NY","ssh_port":22,"transport":"ssh"},true],["placement","cluster","",{},false],["placement","cluster","newyork.example.com",{"group":"Main_Group"},true],["detached","cluster","",{},false],["detached","cluster","newyork.example.com",{"disconnected":false},true],["removed","cluster","",{},false],["prepjoin","cluster","",{},false]]');
INSERT INTO "commits" VALUES('SER-NY',2,117738346983915520,'admin',1.79654460119540500644e+09,'members','{"SER-NY":1}','[["groups","cluster","West",{"name":"West"},false],["machines","cluster","losangeles.example.com",{"address":null,"ccs_port":null,"host_key":null,"machine_key":null,"serial":"SER-0","ssh_port":22,"transport":"ssh"},false],["machines","cluster","chicago.example.com",{"address":null,"ccs_port":null,"host_key":null,"machine_key":null,"serial":"SER-1","ssh_port":22,"transport":"ssh"},false],["placement","cluster","losangeles.example.com",{"group":"West"},false],["placement","cluster","chicago.example.com",{"group":"Main_Group"},false],["detached","cluster","losangeles.example.com",{"disconnected":false},false],["detached","cluster","chicago.example.com",{"disconnected":false},false]]');
INSERT INTO "commits" VALUES('SER-NY',3,117738346983915521,'alice',1.79654460119579720495e+09,'a legacy commit','{"SER-NY":2}','[["unsubscribe","cluster","",{},false],["unsubscribe","cluster","a@x.example",{"comment":"\u00e9t\u00e9"},true]]');
CREATE TABLE entries (
	feature VARCHAR(64) NOT NULL, 
	mode VARCHAR(300) NOT NULL, 
	"key" VARCHAR(300) NOT NULL, 
	hlc BIGINT NOT NULL, 
	origin VARCHAR(128) NOT NULL, 
	seq INTEGER NOT NULL, 
	value TEXT, 
	with_reset BOOLEAN NOT NULL, 
	PRIMARY KEY (feature, mode, "key")
);
INSERT INTO "entries" VALUES('cluster','cluster','',117738346983849984,'SER-NY',1,'{"id":"2980e3b6034818b8","name":"americas"}',0);
INSERT INTO "entries" VALUES('groups','cluster','',117738346983849984,'SER-NY',1,'{}',0);
INSERT INTO "entries" VALUES('groups','cluster','Main_Group',117738346983849984,'SER-NY',1,'{"name":"Main_Group"}',1);
INSERT INTO "entries" VALUES('machines','cluster','',117738346983849984,'SER-NY',1,'{}',0);
INSERT INTO "entries" VALUES('machines','cluster','newyork.example.com',117738346983849984,'SER-NY',1,'{"address":null,"ccs_port":null,"host_key":null,"machine_key":null,"serial":"SER-NY","ssh_port":22,"transport":"ssh"}',1);
INSERT INTO "entries" VALUES('placement','cluster','',117738346983849984,'SER-NY',1,'{}',0);
INSERT INTO "entries" VALUES('placement','cluster','newyork.example.com',117738346983849984,'SER-NY',1,'{"group":"Main_Group"}',1);
INSERT INTO "entries" VALUES('detached','cluster','',117738346983849984,'SER-NY',1,'{}',0);
INSERT INTO "entries" VALUES('detached','cluster','newyork.example.com',117738346983849984,'SER-NY',1,'{"disconnected":false}',1);
INSERT INTO "entries" VALUES('removed','cluster','',117738346983849984,'SER-NY',1,'{}',0);
INSERT INTO "entries" VALUES('prepjoin','cluster','',117738346983849984,'SER-NY',1,'{}',0);
INSERT INTO "entries" VALUES('groups','cluster','West',117738346983915520,'SER-NY',2,'{"name":"West"}',0);
INSERT INTO "entries" VALUES('machines','cluster','losangeles.example.com',117738346983915520,'SER-NY',2,'{"address":null,"ccs_port":null,"host_key":null,"machine_key":null,"serial":"SER-0","ssh_port":22,"transport":"ssh"}',0);
INSERT INTO "entries" VALUES('machines','cluster','chicago.example.com',117738346983915520,'SER-NY',2,'{"address":null,"ccs_port":null,"host_key":null,"machine_key":null,"serial":"SER-1","ssh_port":22,"transport":"ssh"}',0);
INSERT INTO "entries" VALUES('placement','cluster','losangeles.example.com',117738346983915520,'SER-NY',2,'{"group":"West"}',0);
INSERT INTO "entries" VALUES('placement','cluster','chicago.example.com',117738346983915520,'SER-NY',2,'{"group":"Main_Group"}',0);
INSERT INTO "entries" VALUES('detached','cluster','losangeles.example.com',117738346983915520,'SER-NY',2,'{"disconnected":false}',0);
INSERT INTO "entries" VALUES('detached','cluster','chicago.example.com',117738346983915520,'SER-NY',2,'{"disconnected":false}',0);
INSERT INTO "entries" VALUES('unsubscribe','cluster','',117738346983915521,'SER-NY',3,'{}',0);
INSERT INTO "entries" VALUES('unsubscribe','cluster','a@x.example',117738346983915521,'SER-NY',3,'{"comment":"\u00e9t\u00e9"}',1);
CREATE TABLE losses (
	feature VARCHAR(64) NOT NULL, 
	mode VARCHAR(300) NOT NULL, 
	"key" VARCHAR(300) NOT NULL, 
	loser_origin VARCHAR(128) NOT NULL, 
	loser_seq INTEGER NOT NULL, 
	loser_hlc BIGINT NOT NULL, 
	loser_value TEXT, 
	loser_with_reset BOOLEAN NOT NULL, 
	by_origin VARCHAR(128) NOT NULL, 
	by_seq INTEGER NOT NULL, 
	PRIMARY KEY (feature, mode, "key", loser_origin, loser_seq)
);
CREATE TABLE meta (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO "meta" VALUES('origin','SER-NY');
INSERT INTO "meta" VALUES('hostname','newyork.example.com');
INSERT INTO "meta" VALUES('schema','1');
COMMIT;
